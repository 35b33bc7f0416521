/* SPDX-License-Identifier: MIT */
/*
 * policy.h - the scaling decision shared by the autoscale plugins: pressure
 * must last up_after before a scale-up (hysteresis), idleness must last
 * down_after before a scale-down, no two actions within cooldown, and the
 * number of instances stays within [min, max]. Header-only: each plugin
 * compiles its own copy (plugins link nothing but libc).
 */
#ifndef VGPU_AUTOSCALE_POLICY_H
#define VGPU_AUTOSCALE_POLICY_H

#include <stdint.h>
#include <vgpu/plugin.h>

/* Parameter table entries every autoscale plugin shares (append to its own). */
#define SCALE_POLICY_PARAMS \
	{ "up_after", "2s", "pressure must last this long before scaling up", \
	  VGPU_PARAM_TIME, 0, 0 }, \
	{ "down_after", "60s", "idleness must last this long before scaling down", \
	  VGPU_PARAM_TIME, 0, 0 }, \
	{ "cooldown", "30s", "at least this long between two actions", VGPU_PARAM_TIME, 0, 0 }, \
	{ "min", "0", "fewest instances to keep", VGPU_PARAM_UINT, 0, 1000 }, \
	{ "max", "1", "most instances to run", VGPU_PARAM_UINT, 0, 1000 }

struct scale_policy {
	uint64_t up_after, down_after, cooldown; /* ns */
	uint64_t min, max;
};

#define SCALE_MAX_DEVICES 16

/* Per device (signals come per device; device -1 is the whole server). */
struct scale_state {
	uint64_t pressure_since[SCALE_MAX_DEVICES + 1]; /* 0: no pressure now */
	uint8_t seen[SCALE_MAX_DEVICES + 1];
	uint8_t idle[SCALE_MAX_DEVICES + 1];            /* idle for down_after */
	uint64_t last_action;                           /* 0: never */
};

enum scale_action { SCALE_NONE = 0, SCALE_UP = 1, SCALE_DOWN = 2 };

/* Read the five shared parameters starting at values[first]. */
static inline void scale_policy_read(struct scale_policy *p, const union vgpu_param_value *v,
				     unsigned first)
{
	p->up_after = v[first].u;
	p->down_after = v[first + 1].u;
	p->cooldown = v[first + 2].u;
	p->min = v[first + 3].u;
	p->max = v[first + 4].u;
}

/* Clients wait for capacity, or memory is oversubscribed. */
static inline int scale_pressure(const struct vgpu_autoscale_signal *sig)
{
	return sig->waiting > 0 || sig->event == VGPU_SCALE_PRESSURE ||
	       sig->event == VGPU_SCALE_MEM_PRESSURE;
}

static inline unsigned scale_slot(const struct vgpu_autoscale_signal *sig)
{
	return sig->device >= 0 && sig->device < SCALE_MAX_DEVICES ? (unsigned)sig->device + 1 : 0;
}

/*
 * Decide on one signal, given the instances running now. Updates st; the
 * caller performs the action and then calls scale_done(st, now).
 * Up: pressure on the signal's device lasted up_after. Down: every device
 * heard from has been idle for down_after. Neither within cooldown of the
 * last action; instances stay within [min, max].
 */
static inline enum scale_action scale_decide(const struct scale_policy *p, struct scale_state *st,
					     const struct vgpu_autoscale_signal *sig,
					     uint64_t instances)
{
	uint64_t now = sig->now_ns;
	unsigned k = scale_slot(sig);
	int cooled = !st->last_action || now - st->last_action >= p->cooldown;
	int all_idle = 1;

	st->seen[k] = 1;
	if (scale_pressure(sig)) {
		if (!st->pressure_since[k])
			st->pressure_since[k] = now;
	} else {
		st->pressure_since[k] = 0;
	}
	st->idle[k] = sig->event == VGPU_SCALE_IDLE && sig->idle_ns >= p->down_after;
	for (unsigned i = 0; i <= SCALE_MAX_DEVICES; i++)
		if (st->seen[i] && !st->idle[i])
			all_idle = 0;
	if (instances < p->min && cooled)
		return SCALE_UP;
	if (st->pressure_since[k] && now - st->pressure_since[k] >= p->up_after && cooled &&
	    instances < p->max)
		return SCALE_UP;
	if (all_idle && cooled && instances > p->min)
		return SCALE_DOWN;
	return SCALE_NONE;
}

static inline void scale_done(struct scale_state *st, uint64_t now)
{
	st->last_action = now;
	/* the next scale-up needs pressure to last again */
	for (unsigned i = 0; i <= SCALE_MAX_DEVICES; i++)
		st->pressure_since[i] = 0;
}

#endif
