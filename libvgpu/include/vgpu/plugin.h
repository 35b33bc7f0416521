/* SPDX-License-Identifier: MIT */
/*
 * vgpu/plugin.h - the libvgpu plugin ABI (scheduler, memory and autoscale
 * plugins). See vgpu-plugin(7).
 *
 * A plugin is a shared object that exports ONE symbol, vgpu_plugin_entry,
 * returning a descriptor. The descriptor starts with the ABI version it was
 * built for; libvgpu refuses a plugin whose ABI it does not speak. Every ops
 * table and every struct the host fills starts with its size, so fields can
 * be appended without breaking built plugins.
 *
 *   #include <vgpu/plugin.h>
 *
 *   static const struct vgpu_plugin_param params[] = {
 *       { "quantum", "2ms", "time slice per pick", VGPU_PARAM_UINT, 0, 0 },
 *       VGPU_PARAM_END
 *   };
 *   static const struct vgpu_sched_ops ops = { sizeof(ops), ... };
 *   static const struct vgpu_plugin_desc desc = {
 *       VGPU_PLUGIN_ABI_VERSION, VGPU_PLUGIN_SCHEDULER, "sched-mine",
 *       "my policy", "1.0", params, my_init, my_fini, &ops,
 *   };
 *   VGPU_PLUGIN_DEFINE(desc)
 *
 * A plugin calls nothing of libvgpu except the functions of the
 * struct vgpu_plugin_host it is handed at init: it does not link libvgpu
 * (build with `pkg-config --cflags --libs vgpu-plugin`).
 *
 * Threads: the host serialises the calls into one plugin instance (it holds
 * a lock around them); ops must not block and should be short (they sit on
 * the dispatch path). Host functions may be called from inside ops.
 *
 * Plugins are never unloaded.
 */
#ifndef VGPU_PLUGIN_H
#define VGPU_PLUGIN_H

#include <stddef.h>
#include <stdint.h>
#include <vgpu.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The ABI this header describes. Bumped only for incompatible changes;
 * appending fields to size-prefixed structs is not one. */
#define VGPU_PLUGIN_ABI_VERSION 1u

/* Name of the entry symbol (for dlsym). */
#define VGPU_PLUGIN_ENTRY_SYMBOL "vgpu_plugin_entry"

enum vgpu_plugin_kind {
	VGPU_PLUGIN_SCHEDULER = 1, /* ops: struct vgpu_sched_ops */
	VGPU_PLUGIN_MEMORY = 2,    /* ops: struct vgpu_mem_ops */
	VGPU_PLUGIN_AUTOSCALE = 3, /* ops: struct vgpu_autoscale_ops */
};

/* ------------------------------------------------------------------------ */
/* Parameters                                                               */

/*
 * A plugin's parameter table is its documentation (`vgpu plugins` prints
 * it), the parser and the validation: the host parses "key=value" pairs of
 * the plugin spec ("sched-fair:weights=alice=3;bob=1,default_weight=1")
 * against it, refuses unknown keys and malformed values naming the
 * parameter, and hands the typed values to init in table order.
 */
enum vgpu_param_type {
	VGPU_PARAM_INT = 1,    /* int64: "-3", "0x10" */
	VGPU_PARAM_UINT = 2,   /* uint64: "42" */
	VGPU_PARAM_DOUBLE = 3, /* double: "0.25", "1e-3" */
	VGPU_PARAM_SIZE = 4,   /* bytes as uint64: "4096", "256K", "4G" */
	VGPU_PARAM_STRING = 5, /* any text (no ',') */
	VGPU_PARAM_BOOL = 6,   /* "1/0", "yes/no", "true/false", "on/off" */
	VGPU_PARAM_LIST = 7,   /* ';'-separated strings: "alice=3;bob=1" */
	VGPU_PARAM_TIME = 8,   /* duration as uint64 ns: "100ms", "2s", "500us", "10ns" */
};

struct vgpu_plugin_param {
	const char *name;          /* [a-z0-9_]+ ; NULL ends the table */
	const char *default_value; /* text, parsed like a given value; NULL = "" */
	const char *help;          /* one line */
	uint32_t type;             /* enum vgpu_param_type */
	/* Bounds for INT, UINT, DOUBLE, SIZE, TIME; min == max means none. */
	double min, max;
};
#define VGPU_PARAM_END { NULL, NULL, NULL, 0, 0, 0 }

union vgpu_param_value {
	int64_t i;   /* INT */
	uint64_t u;  /* UINT, SIZE, TIME (ns) */
	double d;    /* DOUBLE */
	int b;       /* BOOL */
	const char *s; /* STRING */
	struct {
		const char *const *items;
		uint32_t n;
	} list;      /* LIST */
};

/* Parsed configuration, valid until the plugin instance is finished. */
struct vgpu_plugin_config {
	size_t size;
	uint32_t nvalues;                     /* entries of the param table */
	const union vgpu_param_value *values; /* values[i] for params[i] */
	const char *spec;                     /* the text it came from */
};

/* ------------------------------------------------------------------------ */
/* Sessions as plugins see them                                             */

/*
 * One per session (a client, tenant's handle) on a device. The host owns it;
 * plugins may keep pointers to it between session_open and session_close
 * and store their own state in their kind's priv field.
 */
struct vgpu_plugin_session {
	size_t size;
	uint64_t id;          /* unique in the engine */
	const char *tenant;   /* "default" when not given */
	const char *label;    /* for messages: "cpu:0", "tcp://h:7100/0" */
	int device;           /* device index */
	int priority;         /* ?priority=N (default 0; higher is more urgent) */
	double share;         /* ?share= or tenant config; 1.0 = uncapped */
	double weight;        /* ?weight= (default 0: the plugin's default) */
	uint64_t mem_limit;   /* ?mem= (bytes; 0 = none) */
	void *sched_priv;     /* the scheduler plugin's */
	void *mem_priv;       /* the memory plugin's */
	void *scale_priv;     /* the autoscale plugins' (shared: first wins) */
};

struct vgpu_plugin_session_stats {
	size_t size;            /* set by the caller */
	uint64_t device_ns;     /* measured device time of its work */
	uint64_t items;         /* work items run */
	uint64_t queued;        /* items waiting in its queues */
	uint64_t mem_used;      /* bytes allocated */
	uint64_t mem_on_host;   /* bytes evicted to host memory */
	uint64_t opened_ns;     /* host clock when it opened */
	uint64_t idle_ns;       /* time since its last work completed */
};

struct vgpu_plugin_device_stats {
	size_t size;            /* set by the caller */
	uint32_t sessions;      /* admitted sessions */
	uint32_t waiting;       /* sessions in the admission queue now */
	uint32_t slots;         /* work items the device runs at once */
	uint32_t running;       /* items running now */
	uint64_t device_ns;     /* total measured device time */
	uint64_t mem_total;     /* device memory */
	uint64_t mem_used;      /* allocated by all sessions */
	uint64_t mem_on_host;   /* evicted to host */
	uint64_t admit_waits;   /* sessions that had to wait to be admitted */
	uint64_t admit_wait_ns; /* their total wait */
	uint64_t admit_rejected;/* sessions refused (VGPU_ERR_BUSY) */
	uint64_t idle_ns;       /* time since the device last ran work */
	/* appended: residency (memory plugins) */
	uint64_t mem_resident;  /* allocated bytes backed on the device now */
	uint64_t mem_pinned;    /* resident bytes pinned (VGPU_ADVISE_PIN) */
	uint64_t mem_in_use;    /* resident bytes referenced by running work */
	uint64_t mem_capacity;  /* what may be allocated in all: mem_total, or
				 * more with an oversubscribing plugin */
};

/* ------------------------------------------------------------------------ */
/* What the host hands a plugin                                             */

enum vgpu_plugin_log_level {
	VGPU_PLUGIN_LOG_ERROR = 0,
	VGPU_PLUGIN_LOG_WARN = 1,
	VGPU_PLUGIN_LOG_INFO = 2,
	VGPU_PLUGIN_LOG_DEBUG = 3,
};

struct vgpu_plugin_host {
	size_t size;              /* sizeof as the host knows it: check before
				   * using a field appended later */
	uint32_t abi_version;     /* VGPU_PLUGIN_ABI_VERSION of the host */
	int device;               /* device of this instance; -1: engine-wide */
	void *host_priv;          /* the host's; do not touch */

	/* Log to stderr (filtered by $VGPU_LOG), prefixed by the plugin name. */
	void (*log)(const struct vgpu_plugin_host *h, int level, const char *fmt, ...)
#if defined(__GNUC__)
		__attribute__((format(printf, 3, 4)))
#endif
		;
	/* Set the message of a failure the plugin reports (init refusing a
	 * parameter, session_open refusing a session) and return st. */
	vgpu_status (*fail)(const struct vgpu_plugin_host *h, vgpu_status st,
			    const char *fmt, ...)
#if defined(__GNUC__)
		__attribute__((format(printf, 3, 4)))
#endif
		;
	/* Monotonic clock, nanoseconds (the clock of all *_ns times). */
	uint64_t (*now_ns)(const struct vgpu_plugin_host *h);
	/* A URI parameter of the session ("mem", "tenant", "weight", ...) or NULL. */
	const char *(*session_param)(const struct vgpu_plugin_host *h,
				     const struct vgpu_plugin_session *s, const char *key);
	/* Stats; out->size must be set. Missing fields (older host) stay 0. */
	vgpu_status (*session_stats)(const struct vgpu_plugin_host *h,
				     const struct vgpu_plugin_session *s,
				     struct vgpu_plugin_session_stats *out);
	vgpu_status (*device_stats)(const struct vgpu_plugin_host *h, int device,
				    struct vgpu_plugin_device_stats *out);
	/* Memory plugins: move the allocation starting at base to host memory
	 * (its device address stays valid) / back to the device. The host keeps
	 * the bytes; no byte is lost. VGPU_ERR_UNSUPPORTED if the backend cannot. */
	vgpu_status (*mem_evict)(const struct vgpu_plugin_host *h,
				 const struct vgpu_plugin_session *s, vgpu_dptr base);
	vgpu_status (*mem_restore)(const struct vgpu_plugin_host *h,
				   const struct vgpu_plugin_session *s, vgpu_dptr base);
	/* Scheduler plugins: ask the dispatcher to call pick again (after a
	 * plugin-side timer made a session eligible). */
	void (*kick)(const struct vgpu_plugin_host *h);
	/* Appended (memory plugins; check size): VGPU_MEM_STATE_* flags of the
	 * allocation starting at base (0 if there is none). */
	uint32_t (*mem_state)(const struct vgpu_plugin_host *h,
			      const struct vgpu_plugin_session *s, vgpu_dptr base);
};

/* mem_state flags. mem_evict refuses (VGPU_ERR_BUSY) an allocation that is
 * IN_USE (referenced by work the device is running) or PINNED. */
#define VGPU_MEM_STATE_EXISTS 0x1u   /* an allocation starts at base */
#define VGPU_MEM_STATE_RESIDENT 0x2u /* backed on the device */
#define VGPU_MEM_STATE_IN_USE 0x4u   /* running work references it */
#define VGPU_MEM_STATE_PINNED 0x8u   /* vgpu_mem_advise(VGPU_ADVISE_PIN) */
#define VGPU_MEM_STATE_TOUCHED 0x10u /* has contents (else reads as zeros) */

/* ------------------------------------------------------------------------ */
/* Scheduler plugins                                                        */

/*
 * One instance per device. The engine queues work per session; whenever the
 * device has a free slot the dispatcher calls pick() and runs the next item
 * of the session returned, then reports the item's measured device time with
 * charge(). A session is "runnable" between runnable() and idle(): it has
 * queued work the device may run now. Sessions capped by share= are made
 * idle by the host while over their share, so policies need not know caps.
 */
struct vgpu_sched_ops {
	size_t size; /* sizeof(struct vgpu_sched_ops) */
	/* Admission: return VGPU_OK, or VGPU_ERR_BUSY (the host may queue the
	 * session and retry when another closes) or another error (refused).
	 * May be NULL. */
	vgpu_status (*session_open)(void *state, struct vgpu_plugin_session *s);
	void (*session_close)(void *state, struct vgpu_plugin_session *s);
	void (*runnable)(void *state, struct vgpu_plugin_session *s, uint64_t now_ns);
	void (*idle)(void *state, struct vgpu_plugin_session *s, uint64_t now_ns);
	/* Return a runnable session, or NULL to leave the slot empty; then
	 * *wake_ns may be set to the absolute time to ask again (0: when
	 * something changes). */
	struct vgpu_plugin_session *(*pick)(void *state, uint64_t now_ns, uint64_t *wake_ns);
	/* An item of s ran for device_ns of measured device time. */
	void (*charge)(void *state, struct vgpu_plugin_session *s, uint64_t device_ns,
		       uint64_t now_ns);
};

/* ------------------------------------------------------------------------ */
/* Memory plugins                                                           */

#define VGPU_MEM_READ 0x1u
#define VGPU_MEM_WRITE 0x2u

/* An allocation that work is about to touch. */
struct vgpu_mem_ref {
	vgpu_dptr base;   /* start of the allocation */
	uint64_t size;    /* its size (rounded to the device granularity) */
	uint32_t flags;   /* VGPU_MEM_READ | VGPU_MEM_WRITE */
	uint32_t resident;/* 1 if its backing is on the device now */
};

/*
 * One instance per device. Hooks at allocation and free, and before work
 * runs ("make these buffers resident": call host->mem_restore for those not
 * resident, host->mem_evict on others to make room). Every hook may be NULL.
 */
struct vgpu_mem_ops {
	size_t size; /* sizeof(struct vgpu_mem_ops) */
	vgpu_status (*session_open)(void *state, struct vgpu_plugin_session *s);
	void (*session_close)(void *state, struct vgpu_plugin_session *s);
	/* Before allocating size bytes: VGPU_OK, or VGPU_ERR_OUT_OF_MEMORY
	 * (quota; set the message with host->fail), after evicting if it wants. */
	vgpu_status (*alloc)(void *state, struct vgpu_plugin_session *s, uint64_t size);
	/* The allocation exists / is gone. */
	void (*allocated)(void *state, struct vgpu_plugin_session *s, vgpu_dptr base,
			  uint64_t size);
	void (*freed)(void *state, struct vgpu_plugin_session *s, vgpu_dptr base, uint64_t size);
	/* Before a work item runs: make refs resident. An error fails the item. */
	vgpu_status (*prepare)(void *state, struct vgpu_plugin_session *s,
			       const struct vgpu_mem_ref *refs, uint32_t nrefs);
	/* After it ran (refs may be evicted again). */
	void (*complete)(void *state, struct vgpu_plugin_session *s,
			 const struct vgpu_mem_ref *refs, uint32_t nrefs);

	/* ---- appended (check size) ---- */
	uint32_t flags;   /* VGPU_MEM_OPS_* */
	/* Lookahead: a work item that references refs was queued on a stream
	 * (work: its id, unique while it lives). dequeued: it is about to run
	 * (prepare follows, without the work id) or was dropped. Queued items
	 * run in queue order per stream; streams interleave. */
	void (*queued)(void *state, struct vgpu_plugin_session *s, uint64_t work,
		       const struct vgpu_mem_ref *refs, uint32_t nrefs);
	void (*dequeued)(void *state, struct vgpu_plugin_session *s, uint64_t work);
	/* Called by the host's prefetch thread while work is queued: make at
	 * most one move (host->mem_restore, or an evict to make room for one)
	 * towards what queued work will need, and return VGPU_OK; return
	 * anything else when there is nothing useful to do. */
	vgpu_status (*prefetch)(void *state);
	/* Bytes the device may hold in all with this plugin (device memory
	 * plus host-backed room), or 0 for device memory. May be NULL. */
	uint64_t (*capacity)(void *state);
	/* The memory session s may use in all (*total) and may still allocate
	 * (*avail), as its device info reports them; leave either unchanged
	 * for "no limit". May be NULL. */
	void (*limits)(void *state, const struct vgpu_plugin_session *s, uint64_t *total,
		       uint64_t *avail);
};

/*
 * VGPU_MEM_OPS_OVERSUBSCRIBE: allocations may exceed device memory. When
 * the device has no room, the host reserves the address only and places
 * the allocation evicted (its bytes read as zeros until written); prepare
 * (or prefetch) makes it resident when work needs it. prepare may return
 * VGPU_ERR_BUSY when the room it needs is held by running work: the host
 * waits for work to complete and calls prepare again.
 */
#define VGPU_MEM_OPS_OVERSUBSCRIBE 0x1u

/* ------------------------------------------------------------------------ */
/* Autoscale plugins                                                        */

enum vgpu_autoscale_event {
	VGPU_SCALE_TICK = 0,       /* periodic (every second at most) */
	VGPU_SCALE_PRESSURE = 1,   /* sessions wait for admission */
	VGPU_SCALE_MEM_PRESSURE = 2,/* memory oversubscribed (evictions) */
	VGPU_SCALE_IDLE = 3,       /* device idle for idle_ns */
};

struct vgpu_autoscale_signal {
	size_t size;
	uint32_t event;           /* enum vgpu_autoscale_event */
	int device;
	uint64_t now_ns;
	uint32_t sessions;        /* admitted */
	uint32_t waiting;         /* in the admission queue */
	uint64_t wait_ns_max;     /* longest current admission wait */
	uint64_t idle_ns;         /* device idle time */
	uint64_t mem_total, mem_used, mem_on_host;
};

/* One instance per engine. */
struct vgpu_autoscale_ops {
	size_t size; /* sizeof(struct vgpu_autoscale_ops) */
	void (*signal)(void *state, const struct vgpu_autoscale_signal *sig);
};

/* ------------------------------------------------------------------------ */
/* The descriptor                                                           */

struct vgpu_plugin_desc {
	uint32_t abi_version;   /* VGPU_PLUGIN_ABI_VERSION: FIRST, always */
	uint32_t kind;          /* enum vgpu_plugin_kind */
	const char *name;       /* "sched-fair": what --plugin NAME selects; the
				 * file is NAME.so */
	const char *description;/* one line */
	const char *version;    /* the plugin's own version */
	const struct vgpu_plugin_param *params; /* VGPU_PARAM_END-terminated, or NULL */
	/* Make an instance. host and cfg stay valid until fini. */
	vgpu_status (*init)(const struct vgpu_plugin_host *host,
			    const struct vgpu_plugin_config *cfg, void **state);
	void (*fini)(void *state);
	const void *ops;        /* the kind's ops table (starts with its size) */
};

typedef const struct vgpu_plugin_desc *(*vgpu_plugin_entry_fn)(void);

#if defined(__GNUC__)
#define VGPU_PLUGIN_EXPORT __attribute__((visibility("default")))
#else
#define VGPU_PLUGIN_EXPORT
#endif

/* Define the entry symbol of a plugin returning &desc. */
#define VGPU_PLUGIN_DEFINE(desc) \
	VGPU_PLUGIN_EXPORT const struct vgpu_plugin_desc *vgpu_plugin_entry(void); \
	VGPU_PLUGIN_EXPORT const struct vgpu_plugin_desc *vgpu_plugin_entry(void) \
	{ return &(desc); }

/* ------------------------------------------------------------------------ */
/* For programs that link libvgpu (not for plugins)                         */

/* A plugin file found on the search path (vgpu_plugin_list). */
struct vgpu_plugin_info {
	size_t size;
	const char *name;                    /* "sched-fair" (from the file name) */
	const char *path;                    /* the file */
	const struct vgpu_plugin_desc *desc; /* NULL when refused */
	vgpu_status status;                  /* VGPU_OK, or why it was refused */
	const char *error;                   /* the message when refused */
};

/*
 * Call fn for every plugin file (NAME.so) on the search path, in search
 * order: $VGPU_PLUGIN_PATH (':'-separated), the plugin directory beside the
 * libvgpu shared object (<libdir>/vgpu/plugins; in a build tree
 * <builddir>/plugins/.libs), then the installed plugin directory. A name
 * found twice is reported once (the first wins, as when loading). Each
 * plugin is loaded (and stays loaded) to read its descriptor. flags: 0.
 */
VGPU_API vgpu_status vgpu_plugin_list(void (*fn)(void *arg, const struct vgpu_plugin_info *info),
				      void *arg, unsigned int flags);
/* Names of enum values, for printing: "scheduler", "int", ... */
VGPU_API const char *vgpu_plugin_kind_name(uint32_t kind);
VGPU_API const char *vgpu_param_type_name(uint32_t type);

#ifdef __cplusplus
}
#endif
#endif /* VGPU_PLUGIN_H */
