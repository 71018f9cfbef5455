// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * cgroup/getpeername4, cgroup/getpeername6: a redirected socket keeps reporting
 * the ClusterIP:port it connected to, not the node proxy.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "lib/ecnet.h"
#include "lib/maps.h"
#include "lib/addr.h"

#define SYS_PROCEED 1

static __always_inline struct ecnet_origdst *redirected(struct bpf_sock_addr *ctx)
{
	__u64 cookie = bpf_get_socket_cookie(ctx);

	return bpf_map_lookup_elem(&ecnet_sock_dst, &cookie);
}

SEC("cgroup/getpeername4")
int ecnet_getpeername4(struct bpf_sock_addr *ctx)
{
	struct ecnet_origdst *dst = redirected(ctx);

	if (!dst || !addr_is_v4mapped(dst->addr))
		return SYS_PROCEED;
	ctx->user_ip4 = addr_v4(dst->addr);
	ctx->user_port = dst->port;
	stat_inc(ECNET_STAT_PEER_RESTORED);
	return SYS_PROCEED;
}

SEC("cgroup/getpeername6")
int ecnet_getpeername6(struct bpf_sock_addr *ctx)
{
	struct ecnet_origdst *dst = redirected(ctx);
	const __u32 *w;

	if (!dst)
		return SYS_PROCEED;
	w = (const __u32 *)dst->addr;
	ctx->user_ip6[0] = w[0];
	ctx->user_ip6[1] = w[1];
	ctx->user_ip6[2] = w[2];
	ctx->user_ip6[3] = w[3];
	ctx->user_port = dst->port;
	stat_inc(ECNET_STAT_PEER_RESTORED);
	return SYS_PROCEED;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
