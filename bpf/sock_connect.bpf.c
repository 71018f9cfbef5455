// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * cgroup/connect4, cgroup/connect6: a TCP connect() to an imported service's
 * ClusterIP:port is rewritten to the node proxy; the original destination is
 * remembered by socket cookie for getpeername and sockops.
 */
#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "lib/ecnet.h"
#include "lib/maps.h"
#include "lib/addr.h"

#define SYS_PROCEED 1

/* Filled in by the loader before load (see struct ecnet_config). */
const volatile struct ecnet_config ecnet_cfg = {};

/* Returns the service entry to redirect for, or NULL to leave the connect alone. */
static __always_inline struct ecnet_svc_value *match_service(struct bpf_sock_addr *ctx,
							     struct ecnet_svc_key *key)
{
	struct ecnet_svc_value *svc;
	struct bpf_sock *sk;

	/* UDP (sendmsg/recvmsg) is not redirected yet. */
	if (ctx->protocol != IPPROTO_TCP)
		return NULL;
	key->port = (__be16)ctx->user_port;
	key->proto = IPPROTO_TCP;
	svc = bpf_map_lookup_elem(&ecnet_services, key);
	if (!svc || (svc->flags & ECNET_SVC_F_DISABLED))
		return NULL;
	/* The proxy's own upstream sockets carry the mark: redirecting them would loop. A loop guard, not a
	 * boundary: any process with CAP_NET_ADMIN (or CAP_NET_RAW since Linux 5.17) can set it, and then reaches
	 * only the ClusterIP itself, i.e. what kube-proxy serves there (a derived Service has no endpoints). */
	sk = ctx->sk;
	if (sk && ecnet_cfg.proxy_mark && (sk->mark & ecnet_cfg.proxy_mark) == ecnet_cfg.proxy_mark) {
		stat_inc(ECNET_STAT_SKIPPED_MARK);
		return NULL;
	}
	return svc;
}

static __always_inline int remember(struct bpf_sock_addr *ctx, const struct ecnet_svc_key *key,
				    const struct ecnet_svc_value *svc, __u8 flags)
{
	struct ecnet_origdst dst = {};
	__u64 cookie = bpf_get_socket_cookie(ctx);

	__builtin_memcpy(dst.addr, key->addr, sizeof(dst.addr));
	dst.port = key->port;
	dst.proto = key->proto;
	dst.flags = flags;
	dst.svc_id = svc->id;
	if (bpf_map_update_elem(&ecnet_sock_dst, &cookie, &dst, BPF_ANY)) {
		/* Without the original destination the proxy could not route it:
		 * better to let the connect go where the application asked. */
		stat_inc(ECNET_STAT_SOCK_DST_FAILED);
		return -1;
	}
	return 0;
}

SEC("cgroup/connect4")
int ecnet_connect4(struct bpf_sock_addr *ctx)
{
	struct ecnet_svc_key key = {};
	struct ecnet_svc_value *svc;

	addr_from_v4(key.addr, ctx->user_ip4);
	svc = match_service(ctx, &key);
	if (!svc || remember(ctx, &key, svc, 0))
		return SYS_PROCEED;
	ctx->user_ip4 = ecnet_cfg.proxy_addr4;
	ctx->user_port = ecnet_cfg.proxy_port;
	stat_inc(ECNET_STAT_REDIRECTED);
	return SYS_PROCEED;
}

SEC("cgroup/connect6")
int ecnet_connect6(struct bpf_sock_addr *ctx)
{
	struct ecnet_svc_key key = {};
	struct ecnet_svc_value *svc;

	addr_from_v6(key.addr, ctx->user_ip6[0], ctx->user_ip6[1], ctx->user_ip6[2], ctx->user_ip6[3]);
	svc = match_service(ctx, &key);
	if (!svc)
		return SYS_PROCEED;
	/* A dual-stack socket reaching an IPv4 service uses ::ffff:ClusterIP. */
	if (addr_is_v4mapped(key.addr)) {
		if (remember(ctx, &key, svc, ECNET_ORIGDST_F_V6SOCK))
			return SYS_PROCEED;
		ctx->user_ip6[0] = 0;
		ctx->user_ip6[1] = 0;
		ctx->user_ip6[2] = bpf_htonl(0x0000ffff);
		ctx->user_ip6[3] = ecnet_cfg.proxy_addr4;
	} else {
		/* Read through a volatile pointer: cast to a plain one, clang would fold
		 * these loads to the compile-time initializer (all zero). */
		const volatile __u32 *p6 = (const volatile __u32 *)ecnet_cfg.proxy_addr6;
		__u32 w0 = p6[0], w1 = p6[1], w2 = p6[2], w3 = p6[3];

		if ((w0 | w1 | w2 | w3) == 0) {
			stat_inc(ECNET_STAT_SKIPPED_NO_V6);
			return SYS_PROCEED;
		}
		if (remember(ctx, &key, svc, ECNET_ORIGDST_F_V6SOCK))
			return SYS_PROCEED;
		ctx->user_ip6[0] = w0;
		ctx->user_ip6[1] = w1;
		ctx->user_ip6[2] = w2;
		ctx->user_ip6[3] = w3;
	}
	ctx->user_port = ecnet_cfg.proxy_port;
	stat_inc(ECNET_STAT_REDIRECTED);
	return SYS_PROCEED;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
