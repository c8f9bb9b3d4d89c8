/* native/launch.c - become bwrap with the run's limits, cgroup and network bridge.
 *
 * sandbox.runner starts bwrap in a child that first joins the run's
 * cgroup, enters or makes the network namespace of the egress bridge (and
 * hands the listening sockets made there to the proxy or resolver),
 * lowers its rlimits, and only then execs bwrap.  In Python that child is
 * a fork of the whole wrapper: 2 to 3 ms of copying, faults and an exec
 * that tears the copy down again.  This program does the same steps from
 * a posix_spawn (no copy) in a fraction of that, and is used instead
 * whenever it is installed; sandbox.runner._child stays the reference, and
 * tests/test_launch.py holds the two to the same behaviour.
 *
 * argv: ERR_FD PROCS_FD RLIMITS BRIDGE -- BWRAP_ARGV...
 *   ERR_FD    where each failure is reported as one line, as _child does:
 *             "C<errno>" (the cgroup, not fatal), "N<stage>:<errno>" (the
 *             bridge), "E<errno>" (limits or exec); end-of-file at the exec
 *   PROCS_FD  the run's cgroup.procs, or "-"
 *   RLIMITS   "-" or RESOURCE:SOFT:HARD,... (-1 is unlimited)
 *   BRIDGE    "-" or KIND:HOST:PORT:FORWARDS:CHANNEL:USERNS_FD:NETNS_FD
 *             KIND t (the proxy's TCP listener) or u (the resolver's UDP
 *             socket); FORWARDS "+"-joined inside ports of [[network.forward]];
 *             NETNS_FD -1 makes a namespace, else it is the session's to enter
 *             (after USERNS_FD unless that is -1)
 * Stdio, the process group and default signal actions come from posix_spawn.
 * Every argument is parsed before anything is done.  Only libc; nothing
 * here allocates.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef SO_ATTACH_REUSEPORT_CBPF
#define SO_ATTACH_REUSEPORT_CBPF 51
#endif
#define MAIN_TAG 255          /* netns.MAIN_TAG */
#define MAX_GRANTS 32         /* hostports.MAX_GRANTS: two listeners each */

extern char **environ;
static int err_fd = -1;

static void say(const char *fmt, long a, long b) {
    char line[48];
    int n = snprintf(line, sizeof line, fmt, a, b);
    if (n > 0 && write(err_fd, line, (size_t)n) < 0) { /* nothing left to tell */ }
}

static _Noreturn void bridge_failed(int stage, int code) {
    say("N%ld:%ld\n", stage, code ? code : 0);
    _exit(127);
}

static _Noreturn void usage(void) {
    if (err_fd >= 0) say("E%ld\n", EINVAL, 0);
    _exit(127);
}

static long number(const char *s, char **end) {
    errno = 0;
    long v = strtol(s, end, 10);
    if (errno || *end == s) usage();
    return v;
}

static int fd_arg(const char *s) {
    char *end;
    if (strcmp(s, "-") == 0) return -1;
    long v = number(s, &end);
    if (*end || v < 0 || v > 1 << 20) usage();
    return (int)v;
}

static void cloexec(int fd) {
    if (fd >= 0) (void)fcntl(fd, F_SETFD, FD_CLOEXEC);
}

/* netns.Bridge._make: root keeps the real root (a network namespace only);
 * anyone else (or root without CAP_SYS_ADMIN) gets a user namespace that
 * maps only its own ids, setgroups denied first. */
static void make_namespace(void) {
    /* the ids before the new user namespace, where they read as unmapped */
    uid_t uid_now = getuid();
    gid_t gid_now = getgid();
    int mapped = uid_now != 0 || unshare(CLONE_NEWNET) != 0;
    if (mapped) {
        if (unshare(CLONE_NEWUSER | CLONE_NEWNET) != 0) bridge_failed(1, errno);
        char uid[40], gid[40];
        snprintf(uid, sizeof uid, "%u %u 1", uid_now, uid_now);
        snprintf(gid, sizeof gid, "%u %u 1", gid_now, gid_now);
        const char *maps[3][2] = {{"/proc/self/setgroups", "deny"},
                                  {"/proc/self/uid_map", uid}, {"/proc/self/gid_map", gid}};
        for (int i = 0; i < 3; i++) {
            int fd = open(maps[i][0], O_WRONLY | O_CLOEXEC);
            if (fd < 0) bridge_failed(2, errno);
            ssize_t n = write(fd, maps[i][1], strlen(maps[i][1]));
            int code = errno;
            close(fd);
            if (n != (ssize_t)strlen(maps[i][1])) bridge_failed(2, n < 0 ? code : EIO);
        }
    }
    struct ifreq lo;
    memset(&lo, 0, sizeof lo);
    strcpy(lo.ifr_name, "lo");
    lo.ifr_flags = IFF_UP | IFF_RUNNING;
    int probe = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (probe < 0 || ioctl(probe, SIOCSIFFLAGS, &lo) != 0) bridge_failed(3, errno);
    close(probe);
}

static int bind_to(int fd, int family, const char *host, long port) {
    if (family == AF_INET) {
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
        if (inet_pton(AF_INET, host, &a.sin_addr) != 1) { errno = EINVAL; return -1; }
        return bind(fd, (struct sockaddr *)&a, sizeof a);
    }
    struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET6, host, &a.sin6_addr) != 1) { errno = EINVAL; return -1; }
    return bind(fd, (struct sockaddr *)&a, sizeof a);
}

/* netns.Bridge._forward_listeners for one port: 127.0.0.1 and, where the
 * namespace has IPv6, [::1]; each in a SO_REUSEPORT group whose program
 * gives every connection to the oldest listener (not fatal if refused). */
static int forward_listeners(long port, int *out) {
    static const struct { int family; const char *addr; } where[2] = {
        {AF_INET, "127.0.0.1"}, {AF_INET6, "::1"}};
    struct sock_filter ret0 = BPF_STMT(BPF_RET | BPF_K, 0);
    struct sock_fprog oldest = {.len = 1, .filter = &ret0};
    int made = 0, one = 1;
    for (int i = 0; i < 2; i++) {
        int fd = socket(where[i].family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            if (where[i].family == AF_INET6) continue;
            return -1;
        }
        if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0
                || bind_to(fd, where[i].family, where[i].addr, port) != 0
                || listen(fd, 128) != 0) {
            int code = errno;
            close(fd);
            if (where[i].family == AF_INET6 && (code == EAFNOSUPPORT || code == EADDRNOTAVAIL))
                continue;
            errno = code;
            return -1;
        }
        (void)setsockopt(fd, SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, &oldest, sizeof oldest);
        out[made++] = fd;
    }
    return made;
}

/* What argv asks for, parsed in full before anything is done. */
struct plan {
    int procs_fd, limit_count, bridge;
    struct { int resource; struct rlimit value; } limits[RLIM_NLIMITS];
    char kind;
    const char *host;
    long port;
    int channel, user_fd, net_fd, grant_count;
    long grants[MAX_GRANTS];
};

static void parse_limits(char *text, struct plan *p) {
    while (text) {
        char *item = strsep(&text, ","), *end;
        long res = number(item, &end), soft, hard;
        if (*end != ':' || res < 0 || res >= RLIM_NLIMITS || p->limit_count >= RLIM_NLIMITS) usage();
        soft = number(end + 1, &end);
        if (*end != ':') usage();
        hard = number(end + 1, &end);
        if (*end) usage();
        p->limits[p->limit_count].resource = (int)res;
        p->limits[p->limit_count].value.rlim_cur = soft < 0 ? RLIM_INFINITY : (rlim_t)soft;
        p->limits[p->limit_count++].value.rlim_max = hard < 0 ? RLIM_INFINITY : (rlim_t)hard;
    }
}

static void parse_bridge(char *spec, struct plan *p) {
    char *field[7], *end;
    for (int i = 0; i < 7; i++) {
        field[i] = strsep(&spec, ":");
        if (!field[i]) usage();
    }
    if (spec || strlen(field[0]) != 1 || !strchr("tu", field[0][0])) usage();
    p->bridge = 1, p->kind = field[0][0], p->host = field[1];
    p->port = number(field[2], &end);
    if (*end || p->port < 0 || p->port > 65535) usage();
    for (char *ports = field[3]; ports && *ports;) {
        long port = number(strsep(&ports, "+"), &end);
        if (*end || port < 1 || port > 65535 || p->grant_count >= MAX_GRANTS) usage();
        p->grants[p->grant_count++] = port;
    }
    p->channel = fd_arg(field[4]);
    long user = number(field[5], &end);
    if (*end || user < -1 || user > 1 << 20) usage();
    long net = number(field[6], &end);
    if (*end || net < -1 || net > 1 << 20 || p->channel < 0) usage();
    p->user_fd = (int)user, p->net_fd = (int)net;
}

/* netns.Bridge.enter: the namespace, then the sockets made in it, sent
 * over the channel to the proxy or resolver, which alone keeps them. */
static void bridge(const struct plan *p) {
    cloexec(p->channel), cloexec(p->user_fd), cloexec(p->net_fd);
    if (p->net_fd >= 0) {  /* the user namespace first: it owns the network one */
        if ((p->user_fd >= 0 && setns(p->user_fd, CLONE_NEWUSER) != 0)
                || setns(p->net_fd, CLONE_NEWNET) != 0)
            bridge_failed(6, errno);
    } else {
        make_namespace();
    }
    int fds[1 + 2 * MAX_GRANTS], count = 0, one = 1;
    unsigned char tags[2 + 2 * MAX_GRANTS];
    tags[0] = 'L';
    int main_fd = socket(AF_INET, (p->kind == 'u' ? SOCK_DGRAM : SOCK_STREAM) | SOCK_CLOEXEC, 0);
    if (main_fd < 0) bridge_failed(4, errno);
    if (p->kind == 'u' && setsockopt(main_fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0)
        bridge_failed(4, errno);
    if (bind_to(main_fd, AF_INET, p->host, p->port) != 0) bridge_failed(4, errno);
    if (p->kind == 't' && listen(main_fd, 1024) != 0) bridge_failed(4, errno);
    fds[count] = main_fd, tags[1 + count++] = MAIN_TAG;
    for (int grant = 0; grant < p->grant_count; grant++) {
        int made = forward_listeners(p->grants[grant], fds + count);
        if (made < 0) bridge_failed(7, errno);
        for (int i = 0; i < made; i++) tags[1 + count++] = (unsigned char)grant;
    }
    char control[CMSG_SPACE(sizeof fds)];
    memset(control, 0, sizeof control);
    struct iovec iov = {.iov_base = tags, .iov_len = 1 + (size_t)count};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control,
                         .msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)count)};
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET, c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)count);
    memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t)count);
    /* MSG_NOSIGNAL: a proxy that already died gives EPIPE, not SIGPIPE */
    if (sendmsg(p->channel, &msg, MSG_NOSIGNAL) < 0) bridge_failed(5, errno);
    for (int i = 0; i < count; i++) close(fds[i]);  /* only the proxy may hold them */
    close(p->channel);
}

/* glibc's posix_spawn leaves its two internal signals (thread cancellation
 * and set*id, 32 and 33) ignored in the child when the parent has handlers
 * for them (any Python that started a thread), and an ignored signal stays
 * ignored across exec: bwrap and the command would start with them
 * ignored, where the fork's child starts with them at their default.  No
 * libc call may name them, hence the system call. */
static void default_internal_signals(void) {
    struct { void *handler; unsigned long flags; void *restorer; unsigned long mask; } dfl;
    memset(&dfl, 0, sizeof dfl);  /* SIG_DFL, no flags, nothing blocked */
    for (int sig = 32; sig < SIGRTMIN; sig++)
        (void)syscall(SYS_rt_sigaction, sig, &dfl, NULL, sizeof dfl.mask);
}

int main(int argc, char **argv) {
    if (argc < 2) _exit(127);
    err_fd = fd_arg(argv[1]);
    if (err_fd < 0) _exit(127);
    cloexec(err_fd);  /* end-of-file at the exec tells the runner bwrap runs */
    if (argc < 7 || strcmp(argv[5], "--") != 0) usage();
    struct plan p;
    memset(&p, 0, sizeof p);
    p.procs_fd = fd_arg(argv[2]), p.user_fd = p.net_fd = p.channel = -1;
    /* parsed in copies: strsep cuts what it parses, and ps shows argv */
    static char limits[1024], spec[1024];
    if (strlen(argv[3]) >= sizeof limits || strlen(argv[4]) >= sizeof spec) usage();
    strcpy(limits, argv[3]), strcpy(spec, argv[4]);
    if (strcmp(limits, "-") != 0) parse_limits(limits, &p);
    if (strcmp(spec, "-") != 0) parse_bridge(spec, &p);
    cloexec(p.procs_fd);
    if (p.procs_fd >= 0 && write(p.procs_fd, "0", 1) != 1)  /* not fatal: the runner warns */
        say("C%ld\n", errno, 0);
    if (p.bridge)  /* after the cgroup: the namespace's owner is born limited */
        bridge(&p);
    for (int i = 0; i < p.limit_count; i++) {  /* last: RLIMIT_AS may refuse what comes before */
        if (setrlimit(p.limits[i].resource, &p.limits[i].value) != 0) {
            say("E%ld\n", errno, 0);
            _exit(127);
        }
    }
    default_internal_signals();
    execve(argv[6], argv + 6, environ);
    say("E%ld\n", errno, 0);
    _exit(127);
}
