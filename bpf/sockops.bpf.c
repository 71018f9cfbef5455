// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * sockops: when a redirected client connection is established, record
 * (client addr:port, proxy addr:port) -> original destination, which is the
 * only thing the proxy can see of the connection when it accepts it, with the
 * time, so that a record no proxy took can be told from a fresh one.
 */
#include <linux/bpf.h>
#include <linux/socket.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "lib/ecnet.h"
#include "lib/maps.h"
#include "lib/addr.h"

#ifndef AF_INET
#define AF_INET 2
#endif
#ifndef AF_INET6
#define AF_INET6 10
#endif

SEC("sockops")
int ecnet_sockops(struct bpf_sock_ops *skops)
{
	struct ecnet_conn_key key = {};
	struct ecnet_conn_dst val = {};
	struct ecnet_origdst *dst;
	__u64 cookie;

	/* Only the client side matters; the proxy's accepted side is PASSIVE. */
	if (skops->op != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB)
		return 1;
	cookie = bpf_get_socket_cookie(skops);
	dst = bpf_map_lookup_elem(&ecnet_sock_dst, &cookie);
	if (!dst)
		return 1;

	/* Every ctx field is read once, unconditionally: clang otherwise merges the
	 * per-family loads into one load through a modified ctx pointer, which the
	 * verifier rejects. */
	__u32 family = skops->family;
	__u32 l4 = skops->local_ip4, r4 = skops->remote_ip4;
	__u32 l6_0 = skops->local_ip6[0], l6_1 = skops->local_ip6[1];
	__u32 l6_2 = skops->local_ip6[2], l6_3 = skops->local_ip6[3];
	__u32 r6_0 = skops->remote_ip6[0], r6_1 = skops->remote_ip6[1];
	__u32 r6_2 = skops->remote_ip6[2], r6_3 = skops->remote_ip6[3];

	if (family == AF_INET) {
		addr_from_v4(key.client_addr, l4);
		addr_from_v4(key.proxy_addr, r4);
	} else if (family == AF_INET6) {
		/* A dual-stack socket on IPv4 reports IPv4-mapped addresses here,
		 * which is the form the key uses anyway. */
		addr_from_v6(key.client_addr, l6_0, l6_1, l6_2, l6_3);
		addr_from_v6(key.proxy_addr, r6_0, r6_1, r6_2, r6_3);
	} else {
		return 1;
	}
	/* local_port is in host order; remote_port is a network-order 32-bit value. */
	key.client_port = bpf_htons((__u16)skops->local_port);
	key.proxy_port = bpf_htons((__u16)bpf_ntohl(skops->remote_port));

	val.dst = *dst;
	val.recorded_ns = bpf_ktime_get_ns();
	if (bpf_map_update_elem(&ecnet_conn_dst, &key, &val, BPF_ANY))
		stat_inc(ECNET_STAT_CONN_DST_FAILED);
	else
		stat_inc(ECNET_STAT_CONN_RECORDED);
	return 1;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
