// ecnet-load: the benchmarks' C load client, so that the client's own cost does not hide the path's (a Node
// client spends more per connection than the path under test). Built by `npm run build` into build/bench/.
// Prints one JSON line, as test/bench/traffic-load.mjs does.
//   ecnet-load cps  IP:PORT THREADS MS     each thread: connect, 64 bytes, their echo, close, for MS
//   ecnet-load bulk IP:PORT BYTES          one connection sends BYTES, half-closes, reads the server's count
//   ecnet-load rr   IP:PORT COUNT          one connection, COUNT sequential 64-byte request/responses
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static struct sockaddr_in target;

static double now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static int dial(void) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  if (connect(fd, (struct sockaddr *)&target, sizeof(target)) < 0) {
    close(fd);
    return -1;
  }
  return fd;
}

static int write_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return -1;
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

static int read_exactly(int fd, char *p, size_t n) {
  while (n > 0) {
    ssize_t r = read(fd, p, n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return -1;
    p += r;
    n -= (size_t)r;
  }
  return 0;
}

struct cps_arg {
  double deadline;
  long ok;
  long failed;
};

static void *cps_thread(void *p) {
  struct cps_arg *a = p;
  char msg[64], back[64];
  memset(msg, 'x', sizeof(msg));
  while (now_us() < a->deadline) {
    int fd = dial();
    if (fd < 0) {
      a->failed++;
      continue;
    }
    if (write_all(fd, msg, sizeof(msg)) == 0 && read_exactly(fd, back, sizeof(back)) == 0)
      a->ok++;
    else
      a->failed++;
    close(fd);
  }
  return NULL;
}

static int cmp(const void *x, const void *y) {
  double a = *(const double *)x, b = *(const double *)y;
  return a < b ? -1 : a > b;
}

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: ecnet-load cps|bulk|rr IP:PORT ...\n");
    return 2;
  }
  const char *mode = argv[1];
  char host[64];
  const char *colon = strrchr(argv[2], ':');
  if (!colon || (size_t)(colon - argv[2]) >= sizeof(host)) return 2;
  memcpy(host, argv[2], (size_t)(colon - argv[2]));
  host[colon - argv[2]] = 0;
  target.sin_family = AF_INET;
  target.sin_port = htons((uint16_t)atoi(colon + 1));
  if (inet_pton(AF_INET, host, &target.sin_addr) != 1) return 2;

  if (!strcmp(mode, "cps") && argc >= 5) {
    int threads = atoi(argv[3]);
    double ms = atof(argv[4]);
    if (threads < 1 || threads > 256) return 2;
    pthread_t t[256];
    struct cps_arg args[256];
    double start = now_us();
    for (int i = 0; i < threads; i++) {
      args[i] = (struct cps_arg){start + ms * 1e3, 0, 0};
      pthread_create(&t[i], NULL, cps_thread, &args[i]);
    }
    long ok = 0, failed = 0;
    for (int i = 0; i < threads; i++) {
      pthread_join(t[i], NULL);
      ok += args[i].ok;
      failed += args[i].failed;
    }
    double secs = (now_us() - start) / 1e6;
    printf("{\"cps\":%.1f,\"ok\":%ld,\"failed\":%ld,\"threads\":%d}\n", ok / secs, ok, failed, threads);
    return 0;
  }
  if (!strcmp(mode, "bulk")) {
    long long bytes = atoll(argv[3]);
    int fd = dial();
    if (fd < 0) return perror("connect"), 1;
    static char buf[256 * 1024];
    memset(buf, 7, sizeof(buf));
    double t0 = now_us();
    for (long long sent = 0; sent < bytes;) {
      size_t n = bytes - sent < (long long)sizeof(buf) ? (size_t)(bytes - sent) : sizeof(buf);
      if (write_all(fd, buf, n) < 0) return perror("write"), 1;
      sent += (long long)n;
    }
    shutdown(fd, SHUT_WR);
    char reply[64] = {0};
    size_t got = 0;
    for (ssize_t r; got < sizeof(reply) - 1 && (r = read(fd, reply + got, sizeof(reply) - 1 - got)) > 0;) got += (size_t)r;
    double secs = (now_us() - t0) / 1e6;
    close(fd);
    if (atoll(reply) != bytes) return fprintf(stderr, "the server counted %s of %lld\n", reply, bytes), 1;
    printf("{\"mbps\":%.1f}\n", bytes / 1e6 / secs);
    return 0;
  }
  if (!strcmp(mode, "rr")) {
    int count = atoi(argv[3]);
    if (count < 1) return 2;
    int fd = dial();
    if (fd < 0) return perror("connect"), 1;
    double *lat = malloc(sizeof(double) * (size_t)count);
    char msg[64], back[64];
    memset(msg, 1, sizeof(msg));
    for (int i = 0; i < count; i++) {
      double t = now_us();
      if (write_all(fd, msg, sizeof(msg)) < 0 || read_exactly(fd, back, sizeof(back)) < 0) return perror("rr"), 1;
      lat[i] = now_us() - t;
    }
    close(fd);
    qsort(lat, (size_t)count, sizeof(double), cmp);
    printf("{\"p50\":%.1f,\"p99\":%.1f}\n", lat[count / 2], lat[(int)(count * 0.99)]);
    free(lat);
    return 0;
  }
  return 2;
}
