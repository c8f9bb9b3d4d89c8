/* native/client.c - the `sandbox` command: hand `run`/`sh` to the warm server.
 *
 * Starting Python costs more than the whole start-up budget of a run, so
 * the command users type is this small program.  When a warm server of
 * *this* user in *this* context is listening, it sends the run there (argv,
 * environment, umask, signal state and, as fds, stdio and cwd) and waits
 * for the exit status.  Anything else (other commands, a terminal, no
 * server, a server in another context, a fallback answer) execs the Python
 * CLI `sandbox-direct`, which lies next to this binary and takes the same
 * argv.  docs/served.md describes the behaviour, SERVED.md the protocol.
 *
 * Only libc.  Every loop is bounded by a count or ends with the connection.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/personality.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#define MAX_PAYLOAD (4u << 20)  /* the server closes on more; we go direct first */
#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77         /* Linux 6.5; older headers lack the name */
#endif

extern char **environ;

static const int forwarded[4] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT};  /* runner.FORWARDED */
static volatile sig_atomic_t got[4];
static sigset_t start_mask;            /* the mask we were started with, restored before exec */
static struct sigaction start_fwd[4];  /* the four's dispositions before we caught them */
static int caught, last_sig;           /* we catch the four; the last one sent on as "K" */

static void on_signal(int sig)  /* only notes it: the wait loop sends it on */
{
    for (int i = 0; i < 4; i++)
        got[i] |= forwarded[i] == sig;
}

/* Run the Python CLI with our unchanged argv and environment.  The signal
 * state we changed is put back first (exec keeps the mask, and would reset
 * a signal we catch to SIG_DFL even if it was ignored), so the direct run
 * starts as if it had been started itself.  Nothing ran yet, so a signal
 * we caught now acts as it would have without us (a SIGTERM ends us). */
static _Noreturn void direct(char **argv)
{
    static char path[PATH_MAX + 32];
    const char *why;
    for (int i = 0; caught && i < 4; i++) {
        sigaction(forwarded[i], &start_fwd[i], NULL);
        if (got[i] || forwarded[i] == last_sig)
            raise(forwarded[i]);  /* pending until the mask is put back */
    }
    sigprocmask(SIG_SETMASK, &start_mask, NULL);
    if (realpath("/proc/self/exe", path) == NULL) {
        why = strerror(errno);
        strcpy(path, "sandbox-direct");
    } else {
        strcpy(strrchr(path, '/') + 1, "sandbox-direct");  /* realpath is absolute: has a '/' */
        argv[0] = path;
        execv(path, argv);
        why = strerror(errno);
    }
    fprintf(stderr, "sandbox: error: cannot start %s: %s; reinstall sandbox "
            "(pip install --force-reinstall sandbox)\n", path, why);
    exit(125);
}

/* SANDBOX_SERVER says off, read as server.mode reads it (any case, spaces
 * around it ignored): a direct run then starts no server, so none may serve. */
static int mode_off(const char *v)
{
    char word[8];
    size_t n = 0;
    if (v == NULL)
        return 0;
    while (*v == ' ' || (*v >= '\t' && *v <= '\r'))
        v++;
    while (v[n] != '\0' && n < sizeof(word) - 1) {  /* longer than "false" + spaces: not off */
        word[n] = v[n];
        n++;
    }
    if (v[n] != '\0')
        return 0;
    while (n > 0 && (word[n - 1] == ' ' || (word[n - 1] >= '\t' && word[n - 1] <= '\r')))
        n--;
    word[n] = '\0';
    return !strcasecmp(word, "off") || !strcmp(word, "0") || !strcasecmp(word, "no")
           || !strcasecmp(word, "false");
}

/* The 12 hex digits naming this installation's server: FNV-1a (64 bits) of
 * the directory this program lives in, resolved (sandbox.server.install_id
 * computes the same).  One state directory may serve two installations
 * (pipx and a project's venv, two versions): each has its own server, so the
 * code that runs is always the code of the `sandbox` that was typed. */
static int install_id(char *out, size_t size)
{
    char self[PATH_MAX];
    uint64_t h = 0xcbf29ce484222325u;
    if (realpath("/proc/self/exe", self) == NULL)
        return 0;
    *strrchr(self, '/') = '\0';  /* realpath is absolute: has a '/' */
    for (const unsigned char *c = (const unsigned char *)self; *c; c++)
        h = (h ^ *c) * 0x100000001b3u;
    return snprintf(out, size, "%012llx", (unsigned long long)(h & 0xffffffffffffu)) == 12;
}

/* <state>/server-<install id>.sock, <state> as plancache.state_dir computes
 * it; 0 if unknown. */
static int socket_path(char *out, size_t size)
{
    char id[16];
    const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
    char base[PATH_MAX], real[PATH_MAX];
    if (xdg != NULL && *xdg != '\0') {
        if (strlen(xdg) >= sizeof(base))
            return 0;
        strcpy(base, xdg);
    } else {
        if (home == NULL || *home == '\0') {
#ifdef SANDBOX_STATIC   /* static glibc cannot load NSS safely: unknown home, go direct */
            home = NULL;
#else
            struct passwd *pw = getpwuid(getuid());
            home = pw != NULL ? pw->pw_dir : NULL;
#endif
        }
        if (home == NULL || snprintf(base, sizeof(base), "%s/.cache", home) >= (int)sizeof(base))
            return 0;
    }
    if (realpath(base, real) == NULL || !install_id(id, sizeof(id)))
        return 0;  /* no cache directory: no state directory, no server */
    int n = snprintf(out, size, "%s/sandbox/server-%s.sock", real, id);
    return n > 0 && (size_t)n < size;
}

static int same_file(const char *a, const char *b)
{
    struct stat sa, sb;
    int ra = stat(a, &sa);
    int ea = errno;
    int rb = stat(b, &sb);
    if (ra != 0 || rb != 0)  /* a namespace kind this kernel lacks is missing on both */
        return ra != 0 && rb != 0 && ea == ENOENT && errno == ENOENT;
    return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

static int read_small(const char *path, char *buf, size_t size)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    size_t len = 0;
    ssize_t n = 1;
    if (fd < 0)
        return 0;
    while (n > 0 && len < size - 1) {  /* ends at EOF or a full buffer */
        n = read(fd, buf + len, size - 1 - len);
        len += n > 0 ? (size_t)n : 0;
    }
    close(fd);
    buf[len] = '\0';
    return n == 0;  /* a read error or a file too big for us: not checked, so not equal */
}

/* The line "\nKEY..." of a status file, up to its newline; "" when absent. */
static void status_line(const char *status, const char *key, char *out, size_t size)
{
    const char *p = strstr(status, key), *end;
    out[0] = '\0';
    if (p == NULL)
        return;
    end = strchr(p + 1, '\n');  /* p + 1: the key starts with its line's newline */
    snprintf(out, size, "%.*s", (int)(end != NULL ? end - p : (long)strlen(p)), p);
}

/* Rule 6: is the listening process our own user in exactly our context?
 * Checked before we send anything, because the request holds our whole
 * environment and our stdio.  A process that passes could already read our
 * /proc/self/environ and open our /proc/self/fd/N, so it learns nothing new;
 * one in another namespace, under seccomp, NoNewPrivs or other capabilities
 * (e.g. something started inside a sandbox) fails. */
static int peer_ok(int sock)
{
    static const char *const ns[] = {"cgroup", "ipc", "mnt", "net", "pid", "time", "user", "uts"};
    static const char *const keys[] = {"\nNoNewPrivs:", "\nSeccomp:", "\nSeccomp_filters:",
                                       "\nCapEff:", "\nCapBnd:"};
    static char mine[65536], theirs[65536];
    char a[PATH_MAX], b[64], la[256], lb[256];
    struct ucred cred;
    socklen_t len = sizeof(cred);
    int pidfd = -1, ok = 1;

    if (getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 || len != sizeof(cred)
        || cred.pid <= 0 || cred.uid != getuid() || cred.gid != getgid())
        return 0;
    len = sizeof(pidfd);  /* pins the process: checked below that the pid was not reused */
    if (getsockopt(sock, SOL_SOCKET, SO_PEERPIDFD, &pidfd, &len) != 0)
        pidfd = -1;
    for (size_t i = 0; ok && i < sizeof(ns) / sizeof(ns[0]); i++) {
        snprintf(a, sizeof(a), "/proc/%d/ns/%s", (int)cred.pid, ns[i]);
        snprintf(b, sizeof(b), "/proc/self/ns/%s", ns[i]);
        ok = same_file(a, b);
    }
    snprintf(a, sizeof(a), "/proc/%d/root/", (int)cred.pid);
    ok = ok && same_file(a, "/");
    snprintf(a, sizeof(a), "/proc/%d/status", (int)cred.pid);
    ok = ok && read_small(a, theirs, sizeof(theirs)) && read_small("/proc/self/status", mine, sizeof(mine));
    for (size_t i = 0; ok && i < sizeof(keys) / sizeof(keys[0]); i++) {
        status_line(mine, keys[i], la, sizeof(la));
        status_line(theirs, keys[i], lb, sizeof(lb));
        ok = strcmp(la, lb) == 0 && (la[0] != '\0' || i == 2);  /* only Seccomp_filters is optional */
    }
    if (pidfd >= 0) {  /* still the same process (alive, so its pid is not reused)? */
        ok = ok && syscall(SYS_pidfd_send_signal, pidfd, 0, NULL, 0) == 0;
        close(pidfd);
    }
    return ok;
}

/* One growable buffer holds the whole request. */
static char *req;
static size_t req_len, req_cap;

static int put(const void *data, size_t n)
{
    if (req_len + n > 8 + MAX_PAYLOAD)
        return 0;
    if (req_len + n > req_cap) {
        size_t cap = req_cap ? req_cap : 4096;
        while (cap < req_len + n)  /* at most ~11 doublings up to the cap */
            cap *= 2;
        char *p = realloc(req, cap);
        if (p == NULL)
            return 0;
        req = p;
        req_cap = cap;
    }
    memcpy(req + req_len, data, n);
    req_len += n;
    return 1;
}

static int put_strings(char **v)
{
    uint32_t n = 0;
    size_t at = req_len;
    if (!put(&n, 4))
        return 0;
    for (; v[n] != NULL; n++)  /* bounded by the 4 MiB cap */
        if (!put(v[n], strlen(v[n]) + 1))
            return 0;
    memcpy(req + at, &n, 4);
    return 1;
}

static int build_request(char **argv)
{
    static char *no_env[1];  /* started with a NULL environment */
    uint64_t ignored = 0, blocked = 0;
    mode_t mask = umask(0);
    uint32_t mask32 = (uint32_t)mask;
    umask(mask);
    for (int sig = 1; sig <= 64; sig++) {
        struct sigaction sa;
        if (sig < NSIG && sigaction(sig, NULL, &sa) == 0 && sa.sa_handler == SIG_IGN)
            ignored |= (uint64_t)1 << (sig - 1);
        if (sig < NSIG && sigismember(&start_mask, sig) == 1)
            blocked |= (uint64_t)1 << (sig - 1);
    }
    uint32_t payload = 0;
    if (!put("SBX1", 4) || !put(&payload, 4) || !put_strings(argv) || !put_strings(environ != NULL ? environ : no_env)
        || !put(&mask32, 4) || !put(&ignored, 8) || !put(&blocked, 8))
        return 0;
    payload = (uint32_t)(req_len - 8);
    memcpy(req + 4, &payload, 4);
    return 1;
}

/* The first sendmsg carries fds 0, 1, 2 and our cwd; the rest follows. */
static int send_request(int sock)
{
    int fds[4] = {0, 1, 2, open(".", O_PATH | O_DIRECTORY | O_CLOEXEC)};
    union { struct cmsghdr align; char buf[CMSG_SPACE(sizeof(fds))]; } ctl;
    struct iovec iov = {req, req_len};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1,
                         .msg_control = ctl.buf, .msg_controllen = sizeof(ctl.buf)};
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    size_t done = 0;
    ssize_t n;
    if (fds[3] < 0)
        return 0;
    memset(&ctl, 0, sizeof(ctl));
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(fds));
    memcpy(CMSG_DATA(c), fds, sizeof(fds));
    /* MSG_NOSIGNAL here and below: a closed peer is an error, not a SIGPIPE,
     * and SIGPIPE's disposition (which the direct run inherits) stays as it was */
    while (done < req_len) {  /* each pass sends something, is interrupted or fails */
        n = done == 0 ? sendmsg(sock, &msg, MSG_NOSIGNAL)
                      : send(sock, req + done, req_len - done, MSG_NOSIGNAL);
        if (n < 0 && errno != EINTR)
            break;
        done += n > 0 ? (size_t)n : 0;
    }
    close(fds[3]);
    return done == req_len;
}

int main(int argc, char **argv)
{
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    struct sigaction sa = {.sa_handler = on_signal};  /* no SA_RESTART: ppoll must wake */
    unsigned char reply[5];
    size_t have = 0;
    int sock;

    static char *no_argv[2];
    if (argc < 1)  /* started with an empty argv: direct() needs a slot for argv[0] */
        argv = no_argv;
    sigprocmask(SIG_BLOCK, NULL, &start_mask);
#ifndef __linux__  /* (hatch_build.py builds us on Linux only; elsewhere native/sandbox.py) */
    direct(argv);                                                     /* rule 1 */
#endif
    if (mode_off(getenv("SANDBOX_SERVER")))                          /* rule 2 */
        direct(argv);
    if (argc < 2 || (strcmp(argv[1], "run") != 0 && strcmp(argv[1], "sh") != 0))  /* rule 3 */
        direct(argv);
    for (int i = 2; i < argc; i++)  /* the report then goes to an fd the server would not own */
        if (!strcmp(argv[i], "--report-fd") || !strncmp(argv[i], "--report-fd=", 12))
            direct(argv);
    for (int fd = 0; fd < 3; fd++)                                    /* rule 4 */
        if (fcntl(fd, F_GETFD) < 0 || isatty(fd))
            direct(argv);
    /* A personality (setarch -R/-X, linux32) is inherited by a direct run; the
     * server cannot always read ours (Yama lets only ancestors), so go direct. */
    if (personality(0xffffffff) != 0)
        direct(argv);
    if (!socket_path(path, sizeof(path)))                             /* rule 5 */
        direct(argv);
    memcpy(addr.sun_path, path, strlen(path) + 1);
    /* Non-blocking connect: a server too busy to take us (full backlog) is no server. */
    sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (sock < 0 || connect(sock, (struct sockaddr *)&addr, sizeof(addr)) != 0
        || fcntl(sock, F_SETFL, 0) != 0)
        direct(argv);
    if (!peer_ok(sock) || !build_request(argv))                       /* rule 6 */
        direct(argv);

    sigset_t four;                                                    /* rule 7 */
    sigemptyset(&four);
    for (int i = 0; i < 4; i++) {
        sigaddset(&four, forwarded[i]);
        sigaction(forwarded[i], &sa, &start_fwd[i]);
    }
    caught = 1;
    /* Blocked except inside ppoll, so no signal slips between a check and the wait. */
    sigprocmask(SIG_BLOCK, &four, NULL);
    if (!send_request(sock))  /* the server never took the whole request, so nothing ran */
        direct(argv);

    while (have < sizeof(reply)) {  /* until the reply is complete or the connection ends */
        for (int i = 0; i < 4; i++) {
            if (got[i]) {
                int32_t sig = forwarded[i];
                unsigned char k[5] = {'K'};
                memcpy(k + 1, &sig, 4);
                got[i] = 0;
                last_sig = sig;
                if (send(sock, k, 5, MSG_NOSIGNAL) != 5)
                    break;  /* the server is gone: the read below sees it */
            }
        }
        struct pollfd p = {.fd = sock, .events = POLLIN};
        if (ppoll(&p, 1, NULL, &start_mask) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        ssize_t n = read(sock, reply + have, sizeof(reply) - have);
        if (n > 0)
            have += (size_t)n;
        else if (n == 0 || errno != EINTR) {
            /* Reset with nothing of ours left unread (no "K" sent) means the
             * server closed before reading the request: nothing ran. */
            if (n < 0 && errno == ECONNRESET && last_sig == 0 && have == 0)
                direct(argv);
            break;
        }
    }
    if (have == sizeof(reply) && reply[0] == 'X') {                  /* rule 8 */
        int32_t status;
        memcpy(&status, reply + 1, 4);
        return status & 0xff;
    }
    if (have == sizeof(reply) && reply[0] == 'F')
        direct(argv);
    fputs("sandbox: error: the sandbox server ended before reporting the command's exit "
          "status; see 'sandbox server status'\n", stderr);
    return 125;
}
