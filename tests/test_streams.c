/* SPDX-License-Identifier: MIT */
/* test_streams.c - stream ordering, async errors, events. */
#include "config.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "test.h"

static vgpu_t *v;
static vgpu_module *mod;
static vgpu_function *f_inc, *f_spin, *f_trap, *f_fill;

static int setup(void)
{
	if (vgpu_open(&v, vt_uri()) || vt_module_load(v, "test_kernels", &mod) ||
	    vgpu_module_function(mod, "inc_u32", &f_inc) ||
	    vgpu_module_function(mod, "spin_us", &f_spin) ||
	    vgpu_module_function(mod, "trap", &f_trap) ||
	    vgpu_module_function(mod, "fill_u32", &f_fill)) {
		fprintf(stderr, "setup: %s\n", vgpu_last_error());
		return -1;
	}
	return 0;
}

static vgpu_status spin(vgpu_stream *s, uint64_t us)
{
	vgpu_arg a[] = { vgpu_arg_u64(us) };

	return vgpu_launch(v, f_spin, vgpu_dim3_make(1, 1, 1), vgpu_dim3_make(1, 1, 1), 0, s, a, 1);
}

/* Many dependent operations on one stream run in order. */
static int t_ordering(void *d)
{
	enum { N = 4096, ROUNDS = 200 };
	static uint32_t host[N];
	vgpu_stream *s;
	vgpu_dptr p;

	CHECK_OK(vgpu_stream_create(v, &s, 0));
	CHECK_OK(vgpu_mem_alloc(v, sizeof(host), &p));
	CHECK_OK(vgpu_memset(v, p, 0, sizeof(host), s));
	vgpu_arg a[] = { vgpu_arg_dptr(p), vgpu_arg_u64(N) };
	for (int r = 0; r < ROUNDS; r++)
		CHECK_OK(vgpu_launch(v, f_inc, vgpu_dim3_make(N / 256, 1, 1), vgpu_dim3_make(256, 1, 1), 0,
				     s, a, 2));
	CHECK_OK(vgpu_memcpy_dtoh(v, host, p, sizeof(host), s));
	CHECK_OK(vgpu_stream_synchronize(s));
	for (int i = 0; i < N; i++)
		CHECK(host[i] == ROUNDS);
	/* htod from a buffer reused right after the call (small copies are
	 * taken at once) */
	for (uint32_t r = 0; r < 50; r++) {
		uint32_t val = r;

		CHECK_OK(vgpu_memcpy_htod(v, p + 4 * r, &val, 4, s));
		val = 0xdeadbeef;
	}
	CHECK_OK(vgpu_memcpy_dtoh(v, host, p, 200, s));
	CHECK_OK(vgpu_stream_synchronize(s));
	for (uint32_t r = 0; r < 50; r++)
		CHECK(host[r] == r);
	CHECK_OK(vgpu_stream_destroy(s));
	CHECK_OK(vgpu_mem_free(v, p));
	return 0;
}

/* Calls return before the work is done; query says so. */
static int t_async(void *d)
{
	vgpu_stream *s;
	struct timespec a, b;

	CHECK_OK(vgpu_stream_create(v, &s, 0));
	(void)a;
	(void)b;
	/* the call returns while the second of work is still running */
	CHECK_OK(spin(s, 1000000));
	CHECK_ST(vgpu_stream_query(s), VGPU_ERR_NOT_READY);
	CHECK_OK(vgpu_stream_synchronize(s));
	CHECK_OK(vgpu_stream_query(s));
	CHECK_OK(vgpu_stream_destroy(s));
	return 0;
}

/* Errors of async work surface at the next synchronization, once. */
static int t_async_error(void *d)
{
	vgpu_stream *s;
	vgpu_dptr p;
	uint32_t out = 0;

	if (!vt_faults_recoverable())
		return VT_SKIP;
	CHECK_OK(vgpu_stream_create(v, &s, 0));
	CHECK_OK(vgpu_mem_alloc(v, 4096, &p));
	vgpu_arg t[] = { vgpu_arg_i32(1) };
	CHECK_OK(vgpu_launch(v, f_trap, vgpu_dim3_make(1, 1, 1), vgpu_dim3_make(1, 1, 1), 0, s, t, 1));
	/* later work still runs */
	vgpu_arg fa[] = { vgpu_arg_dptr(p), vgpu_arg_u32(9), vgpu_arg_u64(1) };
	CHECK_OK(vgpu_launch(v, f_fill, vgpu_dim3_make(1, 1, 1), vgpu_dim3_make(1, 1, 1), 0, s, fa, 3));
	CHECK_OK(vgpu_memcpy_dtoh(v, &out, p, 4, s));
	CHECK_ST(vgpu_stream_synchronize(s), VGPU_ERR_LAUNCH);
	CHECK_MSG("trap");
	CHECK(out == 9);
	CHECK_OK(vgpu_stream_synchronize(s)); /* reported once */
	/* vgpu_synchronize reports it too */
	CHECK_OK(vgpu_launch(v, f_trap, vgpu_dim3_make(1, 1, 1), vgpu_dim3_make(1, 1, 1), 0, s, t, 1));
	CHECK_ST(vgpu_synchronize(v), VGPU_ERR_LAUNCH);
	CHECK_OK(vgpu_synchronize(v));
	/* an event recorded after failed work reports the error too */
	{
		vgpu_event *e;

		CHECK_OK(vgpu_event_create(v, &e, 0));
		CHECK_OK(vgpu_launch(v, f_trap, vgpu_dim3_make(1, 1, 1), vgpu_dim3_make(1, 1, 1), 0, s,
				     t, 1));
		CHECK_OK(vgpu_event_record(e, s));
		CHECK_ST(vgpu_event_synchronize(e), VGPU_ERR_LAUNCH);
		CHECK_MSG("trap");
		CHECK_ST(vgpu_stream_synchronize(s), VGPU_ERR_LAUNCH);
		CHECK_OK(vgpu_event_record(e, s));
		CHECK_OK(vgpu_event_synchronize(e));
		CHECK_OK(vgpu_event_destroy(e));
	}
	CHECK_OK(vgpu_stream_destroy(s));
	CHECK_OK(vgpu_mem_free(v, p));
	return 0;
}

/* Bad arguments of async calls are refused at once. */
static int t_async_bad_args(void *d)
{
	vgpu_stream *s;
	vgpu_dptr p;
	char buf[16];

	CHECK_OK(vgpu_stream_create(v, &s, 0));
	CHECK_OK(vgpu_mem_alloc(v, 16, &p));
	CHECK_ST(vgpu_memcpy_htod(v, p, buf, 100000, s), VGPU_ERR_BAD_ADDRESS);
	CHECK_OK(vgpu_stream_synchronize(s));
	CHECK_OK(vgpu_stream_destroy(s));
	CHECK_OK(vgpu_mem_free(v, p));
	return 0;
}

/* Streams run concurrently: a short stream finishes while a long one spins. */
static int t_concurrency(void *d)
{
	vgpu_stream *slow, *fast;
	vgpu_dptr p;
	uint32_t out = 0;

	CHECK_OK(vgpu_stream_create(v, &slow, 0));
	CHECK_OK(vgpu_stream_create(v, &fast, 0));
	CHECK_OK(vgpu_mem_alloc(v, 4, &p));
	CHECK_OK(spin(slow, 1500000));
	vgpu_arg fa[] = { vgpu_arg_dptr(p), vgpu_arg_u32(5), vgpu_arg_u64(1) };
	CHECK_OK(vgpu_launch(v, f_fill, vgpu_dim3_make(1, 1, 1), vgpu_dim3_make(1, 1, 1), 0, fast, fa, 3));
	CHECK_OK(vgpu_memcpy_dtoh(v, &out, p, 4, fast));
	CHECK_OK(vgpu_stream_synchronize(fast));
	CHECK(out == 5);
	CHECK_ST(vgpu_stream_query(slow), VGPU_ERR_NOT_READY);
	CHECK_OK(vgpu_stream_destroy(slow)); /* waits */
	CHECK_OK(vgpu_stream_destroy(fast));
	CHECK_OK(vgpu_mem_free(v, p));
	return 0;
}

/* Events: elapsed time, query, cross-stream waits. */
static int t_events(void *d)
{
	vgpu_stream *s, *s2;
	vgpu_event *e0, *e1, *never;
	vgpu_dptr p;
	uint32_t out = 0;
	float ms = 0;

	CHECK_OK(vgpu_stream_create(v, &s, 0));
	CHECK_OK(vgpu_stream_create(v, &s2, 0));
	CHECK_OK(vgpu_event_create(v, &e0, 0));
	CHECK_OK(vgpu_event_create(v, &e1, 0));
	CHECK_OK(vgpu_event_create(v, &never, 0));
	CHECK_OK(vgpu_event_query(never)); /* nothing recorded: complete */
	CHECK_ST(vgpu_event_elapsed_ms(&ms, never, e0), VGPU_ERR_INVALID);
	CHECK_MSG("never recorded");

	CHECK_OK(vgpu_event_record(e0, s));
	CHECK_OK(spin(s, 50000));
	CHECK_OK(vgpu_event_record(e1, s));
	CHECK_ST(vgpu_event_query(e1), VGPU_ERR_NOT_READY);
	CHECK_ST(vgpu_event_elapsed_ms(&ms, e0, e1), VGPU_ERR_NOT_READY);
	CHECK_OK(vgpu_event_synchronize(e1));
	CHECK_OK(vgpu_event_query(e1));
	CHECK_OK(vgpu_event_elapsed_ms(&ms, e0, e1));
	CHECK(ms >= 40.0f && ms < 5000.0f);

	/* s2 waits for s: the fill on s2 must see s's write */
	CHECK_OK(vgpu_mem_alloc(v, 4, &p));
	CHECK_OK(vgpu_memset(v, p, 0, 4, NULL));
	CHECK_OK(spin(s, 200000));
	vgpu_arg fa[] = { vgpu_arg_dptr(p), vgpu_arg_u32(11), vgpu_arg_u64(1) };
	CHECK_OK(vgpu_launch(v, f_fill, vgpu_dim3_make(1, 1, 1), vgpu_dim3_make(1, 1, 1), 0, s, fa, 3));
	CHECK_OK(vgpu_event_record(e0, s));
	CHECK_OK(vgpu_stream_wait_event(s2, e0));
	CHECK_OK(vgpu_memcpy_dtoh(v, &out, p, 4, s2));
	CHECK_OK(vgpu_stream_synchronize(s2));
	CHECK(out == 11);

	/* a NULL-stream record completes at once */
	CHECK_OK(vgpu_event_record(e1, NULL));
	CHECK_OK(vgpu_event_query(e1));

	CHECK_OK(vgpu_event_destroy(e0));
	CHECK_OK(vgpu_event_destroy(e1));
	CHECK_OK(vgpu_event_destroy(never));
	CHECK_OK(vgpu_stream_destroy(s));
	CHECK_OK(vgpu_stream_destroy(s2));
	CHECK_OK(vgpu_mem_free(v, p));
	return 0;
}

/* A free waits for queued work that uses the buffer. */
static int t_free_waits(void *d)
{
	vgpu_stream *s;
	vgpu_dptr p;
	static uint32_t host[1024];

	CHECK_OK(vgpu_stream_create(v, &s, 0));
	CHECK_OK(vgpu_mem_alloc(v, sizeof(host), &p));
	CHECK_OK(spin(s, 100000));
	vgpu_arg fa[] = { vgpu_arg_dptr(p), vgpu_arg_u32(3), vgpu_arg_u64(1024) };
	CHECK_OK(vgpu_launch(v, f_fill, vgpu_dim3_make(4, 1, 1), vgpu_dim3_make(256, 1, 1), 0, s, fa, 3));
	CHECK_OK(vgpu_mem_free(v, p)); /* must not free under the launch */
	CHECK_OK(vgpu_stream_synchronize(s));
	CHECK_OK(vgpu_stream_destroy(s));
	return 0;
}

/* Handles of one vgpu_t cannot be used with another. */
static int t_foreign_stream(void *d)
{
	vgpu_t *w;
	vgpu_stream *s;
	vgpu_dptr p;
	char c = 0;

	CHECK_OK(vgpu_open(&w, vt_uri()));
	CHECK_OK(vgpu_stream_create(w, &s, 0));
	CHECK_OK(vgpu_mem_alloc(v, 16, &p));
	CHECK_ST(vgpu_memcpy_htod(v, p, &c, 1, s), VGPU_ERR_BAD_HANDLE);
	CHECK_OK(vgpu_mem_free(v, p));
	vgpu_close(w); /* also destroys s */
	return 0;
}

/* Closing with work queued and objects alive releases everything. */
static int t_close_busy(void *d)
{
	vgpu_t *w;
	vgpu_stream *s;
	vgpu_event *e;
	vgpu_module *m;
	vgpu_function *f;
	vgpu_dptr p;

	CHECK_OK(vgpu_open(&w, vt_uri()));
	CHECK_OK(vgpu_stream_create(w, &s, 0));
	CHECK_OK(vgpu_event_create(w, &e, 0));
	CHECK_OK(vt_module_load(w, "test_kernels", &m));
	CHECK_OK(vgpu_module_function(m, "spin_us", &f));
	CHECK_OK(vgpu_mem_alloc(w, 1 << 20, &p));
	vgpu_arg a[] = { vgpu_arg_u64(100000) };
	CHECK_OK(vgpu_launch(w, f, vgpu_dim3_make(1, 1, 1), vgpu_dim3_make(1, 1, 1), 0, s, a, 1));
	CHECK_OK(vgpu_event_record(e, s));
	vgpu_close(w);
	return 0;
}

/* Unloading a module waits for its queued launches. */
static int t_unload_queued(void *d)
{
	vgpu_module *m;
	vgpu_function *f;
	vgpu_stream *s;
	vgpu_dptr p;
	uint32_t out[64];

	CHECK_OK(vgpu_stream_create(v, &s, 0));
	CHECK_OK(vt_module_load(v, "test_kernels", &m));
	CHECK_OK(vgpu_module_function(m, "fill_u32", &f));
	CHECK_OK(vgpu_mem_alloc(v, sizeof(out), &p));
	CHECK_OK(spin(s, 100000));
	vgpu_arg fa[] = { vgpu_arg_dptr(p), vgpu_arg_u32(77), vgpu_arg_u64(64) };
	for (int i = 0; i < 10; i++)
		CHECK_OK(vgpu_launch(v, f, vgpu_dim3_make(1, 1, 1), vgpu_dim3_make(64, 1, 1), 0, s, fa, 3));
	CHECK_OK(vgpu_module_unload(m)); /* the launches ran first */
	CHECK_OK(vgpu_memcpy_dtoh(v, out, p, sizeof(out), NULL));
	for (int i = 0; i < 64; i++)
		CHECK(out[i] == 77);
	CHECK_OK(vgpu_stream_synchronize(s));
	CHECK_OK(vgpu_stream_destroy(s));
	CHECK_OK(vgpu_mem_free(v, p));
	return 0;
}

/*
 * An in-process handle's queue is bounded (queue_limit=): once it holds
 * that many bytes of queued work, an asynchronous call waits until the
 * device has run a quarter of it, as cuLaunchKernel waits on a full queue,
 * and nothing is lost. 4 KiB holds a few tens of launches, so by the time
 * 1,000 of them behind a 300 ms kernel have been queued, that kernel and
 * the event recorded after it have completed; without a limit the calls
 * return while it still runs. (A remote handle: test_remote's
 * queue_limit, against vgpud's --queue-limit.)
 */
static vgpu_status queue_run(const char *param, uint32_t *count, vgpu_status *after_calls)
{
	char uri[512];
	vgpu_t *w;
	vgpu_module *m;
	vgpu_function *fs, *fi;
	vgpu_stream *s;
	vgpu_event *e;
	vgpu_dptr p;
	vgpu_status st;
	vgpu_arg sa[] = { vgpu_arg_u64(300000) };

	snprintf(uri, sizeof(uri), "%s%s%s", vt_uri(), strchr(vt_uri(), '?') ? "&" : "?", param);
	if ((st = vgpu_open(&w, uri)))
		return st;
	if ((st = vt_module_load(w, "test_kernels", &m)) ||
	    (st = vgpu_module_function(m, "spin_us", &fs)) ||
	    (st = vgpu_module_function(m, "inc_u32", &fi)) ||
	    (st = vgpu_mem_alloc(w, sizeof(*count), &p)) ||
	    (st = vgpu_memset(w, p, 0, sizeof(*count), NULL)) ||
	    (st = vgpu_stream_create(w, &s, 0)) || (st = vgpu_event_create(w, &e, 0)) ||
	    (st = vgpu_launch(w, fs, vgpu_dim3_make(1, 1, 1), vgpu_dim3_make(1, 1, 1), 0, s, sa, 1)) ||
	    (st = vgpu_event_record(e, s)))
		goto out;
	vgpu_arg ia[] = { vgpu_arg_dptr(p), vgpu_arg_u64(1) };
	for (int i = 0; i < 1000 && !st; i++)
		st = vgpu_launch(w, fi, vgpu_dim3_make(1, 1, 1), vgpu_dim3_make(1, 1, 1), 0, s, ia, 2);
	*after_calls = vgpu_event_query(e);
	if (!st && !(st = vgpu_stream_synchronize(s)))
		st = vgpu_memcpy_dtoh(w, count, p, sizeof(*count), NULL);
out:
	vgpu_close(w);
	return st;
}

static int t_queue_limit(void *d)
{
	struct vgpu_device_info di;
	vgpu_status q = VGPU_ERR_INVALID;
	uint32_t n = 0;
	vgpu_t *w;

	(void)d;
	CHECK_OK(vgpu_device_info(v, &di));
	if (di.flags & VGPU_DEVICE_REMOTE)
		return VT_SKIP; /* the server's setting: test_remote */
	CHECK_OK(queue_run("queue_limit=4K", &n, &q));
	CHECK(n == 1000);
	CHECK_OK(q); /* the spin and the record ran before the last call returned */
	n = 0;
	CHECK_OK(queue_run("queue_limit=0", &n, &q));
	CHECK(n == 1000);
	CHECK_ST(q, VGPU_ERR_NOT_READY);
	/* a bad value is refused, naming it */
	char uri[512];
	snprintf(uri, sizeof(uri), "%s%squeue_limit=4X", vt_uri(), strchr(vt_uri(), '?') ? "&" : "?");
	CHECK_ST(vgpu_open(&w, uri), VGPU_ERR_BAD_URI);
	CHECK_MSG("queue_limit=4X");
	return 0;
}

int main(void)
{
	if (setup())
		return 1;
	vt_run("ordering", t_ordering, NULL);
	vt_run("async_returns_early", t_async, NULL);
	vt_run("async_error_at_sync", t_async_error, NULL);
	vt_run("async_bad_args", t_async_bad_args, NULL);
	vt_run("concurrent_streams", t_concurrency, NULL);
	vt_run("events", t_events, NULL);
	vt_run("free_waits_for_work", t_free_waits, NULL);
	vt_run("foreign_stream", t_foreign_stream, NULL);
	vt_run("close_busy", t_close_busy, NULL);
	vt_run("unload_waits_for_queued_launches", t_unload_queued, NULL);
	vt_run("queue_limit", t_queue_limit, NULL);
	vgpu_close(v);
	return vt_finish();
}
