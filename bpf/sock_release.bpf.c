// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * cgroup/sock_release: forget the original destination of a redirected socket
 * when it is released, so ecnet_sock_dst holds live sockets only.
 */
#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include "lib/ecnet.h"
#include "lib/maps.h"

SEC("cgroup/sock_release")
int ecnet_sock_release(struct bpf_sock *sk)
{
	__u64 cookie;

	if (sk->protocol != IPPROTO_TCP)
		return 1;
	cookie = bpf_get_socket_cookie(sk);
	bpf_map_delete_elem(&ecnet_sock_dst, &cookie);
	return 1;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
