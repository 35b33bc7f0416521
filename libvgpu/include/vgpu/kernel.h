/* SPDX-License-Identifier: MIT */
/*
 * vgpu/kernel.h - host kernels for the cpu backend.
 *
 * A cpu-backend module is a shared object that declares its kernels with
 * VGPU_KERNEL. Each parameter is declared with its type so that the device
 * can check a launch's arguments and call the kernel through libffi:
 *
 *   #include <vgpu/kernel.h>
 *
 *   VGPU_KERNEL(vecadd, VGPU_PTR(const float, a), VGPU_PTR(const float, b),
 *               VGPU_PTR(float, c), VGPU_I32(n))
 *   {
 *       VGPU_FOR_EACH_THREAD(ctx, t) {
 *           int i = (int)vgpu_global_x(ctx, t);
 *           if (i < n)
 *               c[i] = a[i] + b[i];
 *       }
 *   }
 *
 * The kernel runs once per block; `ctx` (const struct vgpu_kctx *) gives the
 * block index, the dimensions and the block's shared memory. The body visits
 * the block's threads itself (VGPU_FOR_EACH_THREAD); there is no barrier
 * between threads because they run one after the other. Pointer parameters
 * receive host addresses of the device buffers; VGPU_VAL(T, name) parameters
 * (by-value structs) receive `const T *name`.
 *
 * Build: cc -shared -fPIC $(pkg-config --cflags vgpu) kernels.c -o kernels.so
 */
#ifndef VGPU_KERNEL_H
#define VGPU_KERNEL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define VGPU_KERNEL_ABI 1

struct vgpu_kdim {
	uint32_t x, y, z;
};

/* What a kernel sees of its launch. Fields are only appended. */
struct vgpu_kctx {
	struct vgpu_kdim grid_dim;
	struct vgpu_kdim block_dim;
	struct vgpu_kdim block_idx;
	void *shared;       /* this block's shared memory, zeroed, or NULL */
	size_t shared_size;
	/* Abort the launch (like CUDA's __trap()): the launch fails with
	 * VGPU_ERR_LAUNCH and msg, reported at the next synchronization. The
	 * kernel should return after calling it; remaining blocks are skipped. */
	void (*trap)(const struct vgpu_kctx *ctx, const char *msg);
	void *internal_; /* the device's; do not touch */
};

#define VGPU_TRAP(ctx, msg) ((ctx)->trap((ctx), (msg)))

/* Parameter type codes; equal to enum vgpu_arg_type in vgpu.h. */
#define VGPU_KPARAM_DPTR 1
#define VGPU_KPARAM_I32 2
#define VGPU_KPARAM_U32 3
#define VGPU_KPARAM_I64 4
#define VGPU_KPARAM_U64 5
#define VGPU_KPARAM_F32 6
#define VGPU_KPARAM_F64 7
#define VGPU_KPARAM_BYTES 8

struct vgpu_kparam {
	uint32_t type;
	uint32_t size;
};

/* The descriptor each VGPU_KERNEL exports as vgpu_kernel__<name>. */
struct vgpu_kernel_desc {
	uint32_t abi; /* VGPU_KERNEL_ABI */
	uint32_t nparams;
	const char *name;
	void (*fn)(void);
	const struct vgpu_kparam *params;
};

#define VGPU_KERNEL_SYMBOL_PREFIX "vgpu_kernel__"

/* Thread helpers. */
#define VGPU_FOR_EACH_THREAD(ctx, t)                                          \
	for (uint32_t t = 0, t##_n_ = (ctx)->block_dim.x * (ctx)->block_dim.y * \
					 (ctx)->block_dim.z;                  \
	     t < t##_n_; t++)

/* Thread t's x index in the grid (1-D view). */
static inline uint64_t vgpu_global_x(const struct vgpu_kctx *ctx, uint32_t t)
{
	return (uint64_t)ctx->block_idx.x * ctx->block_dim.x + (t % ctx->block_dim.x);
}

/* Parameter declarations: (type code, size, C type, name). */
#define VGPU_PTR(T, name) (VGPU_KPARAM_DPTR, sizeof(void *), T *, name)
#define VGPU_I32(name) (VGPU_KPARAM_I32, 4, int32_t, name)
#define VGPU_U32(name) (VGPU_KPARAM_U32, 4, uint32_t, name)
#define VGPU_I64(name) (VGPU_KPARAM_I64, 8, int64_t, name)
#define VGPU_U64(name) (VGPU_KPARAM_U64, 8, uint64_t, name)
#define VGPU_F32(name) (VGPU_KPARAM_F32, 4, float, name)
#define VGPU_F64(name) (VGPU_KPARAM_F64, 8, double, name)
#define VGPU_VAL(T, name) (VGPU_KPARAM_BYTES, sizeof(T), const T *, name)

/* --- preprocessor plumbing (up to 16 parameters) --- */
#define VGPU__P_CODE(c, s, T, n) c
#define VGPU__P_SIZE(c, s, T, n) s
#define VGPU__P_DECL(c, s, T, n) T n
#define VGPU__DESC(p) { VGPU__P_CODE p, (uint32_t)(VGPU__P_SIZE p) }
#define VGPU__DECL(p) , VGPU__P_DECL p

#define VGPU__NARG(...) VGPU__NARG_(__VA_ARGS__, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0)
#define VGPU__NARG_(_1, _2, _3, _4, _5, _6, _7, _8, _9, _10, _11, _12, _13, _14, _15, _16, N, ...) N
#define VGPU__CAT(a, b) VGPU__CAT_(a, b)
#define VGPU__CAT_(a, b) a##b

#define VGPU__M1(f, s, x) f(x)
#define VGPU__M2(f, s, x, ...) f(x) s() VGPU__M1(f, s, __VA_ARGS__)
#define VGPU__M3(f, s, x, ...) f(x) s() VGPU__M2(f, s, __VA_ARGS__)
#define VGPU__M4(f, s, x, ...) f(x) s() VGPU__M3(f, s, __VA_ARGS__)
#define VGPU__M5(f, s, x, ...) f(x) s() VGPU__M4(f, s, __VA_ARGS__)
#define VGPU__M6(f, s, x, ...) f(x) s() VGPU__M5(f, s, __VA_ARGS__)
#define VGPU__M7(f, s, x, ...) f(x) s() VGPU__M6(f, s, __VA_ARGS__)
#define VGPU__M8(f, s, x, ...) f(x) s() VGPU__M7(f, s, __VA_ARGS__)
#define VGPU__M9(f, s, x, ...) f(x) s() VGPU__M8(f, s, __VA_ARGS__)
#define VGPU__M10(f, s, x, ...) f(x) s() VGPU__M9(f, s, __VA_ARGS__)
#define VGPU__M11(f, s, x, ...) f(x) s() VGPU__M10(f, s, __VA_ARGS__)
#define VGPU__M12(f, s, x, ...) f(x) s() VGPU__M11(f, s, __VA_ARGS__)
#define VGPU__M13(f, s, x, ...) f(x) s() VGPU__M12(f, s, __VA_ARGS__)
#define VGPU__M14(f, s, x, ...) f(x) s() VGPU__M13(f, s, __VA_ARGS__)
#define VGPU__M15(f, s, x, ...) f(x) s() VGPU__M14(f, s, __VA_ARGS__)
#define VGPU__M16(f, s, x, ...) f(x) s() VGPU__M15(f, s, __VA_ARGS__)
#define VGPU__MAP(f, s, ...) VGPU__CAT(VGPU__M, VGPU__NARG(__VA_ARGS__))(f, s, __VA_ARGS__)
#define VGPU__COMMA() ,
#define VGPU__NOTHING()

#if defined(__GNUC__)
#define VGPU__KEXPORT __attribute__((visibility("default"), used))
#else
#define VGPU__KEXPORT
#endif

/* A kernel with no parameters. */
#define VGPU_KERNEL0(name)                                                    \
	static void vgpu_kfn__##name(const struct vgpu_kctx *ctx);            \
	VGPU__KEXPORT const struct vgpu_kernel_desc vgpu_kernel__##name = {   \
		VGPU_KERNEL_ABI, 0, #name, (void (*)(void))vgpu_kfn__##name,  \
		NULL };                                                       \
	static void vgpu_kfn__##name(const struct vgpu_kctx *ctx)

/* A kernel with 1 to 16 parameters. */
#define VGPU_KERNEL(name, ...)                                                \
	static void vgpu_kfn__##name(const struct vgpu_kctx *ctx              \
				     VGPU__MAP(VGPU__DECL, VGPU__NOTHING, __VA_ARGS__)); \
	static const struct vgpu_kparam vgpu_kparams__##name[] = {            \
		VGPU__MAP(VGPU__DESC, VGPU__COMMA, __VA_ARGS__) };            \
	VGPU__KEXPORT const struct vgpu_kernel_desc vgpu_kernel__##name = {   \
		VGPU_KERNEL_ABI, VGPU__NARG(__VA_ARGS__), #name,              \
		(void (*)(void))vgpu_kfn__##name, vgpu_kparams__##name };     \
	static void vgpu_kfn__##name(const struct vgpu_kctx *ctx              \
				     VGPU__MAP(VGPU__DECL, VGPU__NOTHING, __VA_ARGS__))

#ifdef __cplusplus
}
#endif
#endif /* VGPU_KERNEL_H */
