/*
 * pynet's native CNI plugin front door: the one piece of pynet that is not Python.
 *
 * Runtimes start a plugin process for every verb. A Python interpreter costs ~7 ms just to start, while
 * the resident daemon serves a request in about 1 ms, so the executables a runtime calls are this small
 * program, copied once per plugin name (`pynet cni install`). It does what cni_plugins/main.py does, in
 * the same wire protocol (cni_plugins/wire.py is its definition):
 *   - VERSION is answered from a constant;
 *   - otherwise it connects to the daemon's socket, passes this process's network namespace and CNI_NETNS
 *     (opened here: the path may exist only in this mount namespace) as fds with the environment and
 *     stdin, and prints the reply;
 *   - when no daemon answers it execs the Python plugin (PYNET_FALLBACK_DIR/<name>) with the same
 *     environment and stdin; when the daemon dies mid-request it tells that script so
 *     (PYNET_DAEMON_LOST=1), which undoes a half-done ADD and serves the request itself.
 * The plugin name is the name it was started as (basename of argv[0]).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#ifndef PYNET_FALLBACK_DIR
#error "build with -DPYNET_FALLBACK_DIR=\"/path/to/python/plugin/scripts\""
#endif

#define DEFAULT_SOCKET "/run/pynet/pynetd.sock"
#define VERSION_REPLY "{\"cniVersion\": \"1.1.0\", \"supportedVersions\": [\"0.3.0\", \"0.3.1\", \"0.4.0\", \"1.0.0\", \"1.1.0\"]}\n"

extern char **environ;

struct buf {
    char *data;
    size_t len, cap;
};

static void grow(struct buf *b, size_t more) {
    if (b->len + more <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + more)
        cap *= 2;
    char *data = realloc(b->data, cap);
    if (!data) {
        fputs("pynet: out of memory\n", stderr);
        _exit(1);
    }
    b->data = data;
    b->cap = cap;
}

static void put(struct buf *b, const void *data, size_t len) {
    grow(b, len);
    memcpy(b->data + b->len, data, len);
    b->len += len;
}

/* One length-prefixed field: 4-byte big-endian length, then the bytes. */
static void put_field(struct buf *b, const void *data, size_t len) {
    unsigned char n[4] = {(unsigned char)(len >> 24), (unsigned char)(len >> 16), (unsigned char)(len >> 8),
                          (unsigned char)len};
    put(b, n, 4);
    put(b, data, len);
}

static const char *plugin_name(const char *argv0) {
    const char *slash = strrchr(argv0, '/');
    return slash ? slash + 1 : argv0;
}

/* Arguments after the name (`dhcp daemon -socketpath ...`): passed on to the Python plugin. */
static char **extra_args;

/* Execs the Python plugin with this environment; stdin is either untouched or the bytes already read. */
static void fallback(const char *name, const struct buf *stdin_read, int lost) {
    char path[4096];
    if (snprintf(path, sizeof path, "%s/%s", PYNET_FALLBACK_DIR, name) >= (int)sizeof path)
        _exit(1);
    if (stdin_read) {
        int fd = memfd_create("pynet-cni-stdin", 0);
        if (fd < 0 || write(fd, stdin_read->data, stdin_read->len) != (ssize_t)stdin_read->len ||
            lseek(fd, 0, SEEK_SET) != 0 || dup2(fd, 0) < 0) {
            perror("pynet: cannot hand stdin to the standalone plugin");
            _exit(1);
        }
        if (fd != 0)
            close(fd);
    }
    if (lost)
        setenv("PYNET_DAEMON_LOST", "1", 1);
    char *none[] = {NULL};
    char **extra = extra_args ? extra_args : none;
    size_t n = 0;
    while (extra[n])
        n++;
    char **argv = calloc(n + 2, sizeof *argv);
    if (!argv)
        _exit(1);
    argv[0] = path;
    memcpy(argv + 1, extra, n * sizeof *argv);
    execve(path, argv, environ);
    fprintf(stderr, "pynet: cannot run %s: %s\n", path, strerror(errno));
    _exit(1);
}

static int connect_daemon(void) {
    const char *path = getenv("PYNET_SOCKET");
    if (!path || !*path)
        path = DEFAULT_SOCKET;
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof addr.sun_path)
        return -1;
    strcpy(addr.sun_path, path);
    int sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (sock < 0)
        return -1;
    if (connect(sock, (struct sockaddr *)&addr, sizeof addr) != 0) {
        close(sock);
        return -1;
    }
    return sock;
}

static int read_all(int fd, struct buf *b) {
    for (;;) {
        grow(b, 65536);
        ssize_t n = read(fd, b->data + b->len, b->cap - b->len);
        if (n == 0)
            return 0;
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        b->len += (size_t)n;
    }
}

static int recv_exact(int sock, void *to, size_t len) {
    char *p = to;
    while (len) {
        ssize_t n = recv(sock, p, len, 0);
        if (n == 0)
            return -1;
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static int recv_field(int sock, struct buf *b) {
    unsigned char n[4];
    if (recv_exact(sock, n, 4) != 0)
        return -1;
    size_t len = ((size_t)n[0] << 24) | ((size_t)n[1] << 16) | ((size_t)n[2] << 8) | n[3];
    b->len = 0;
    grow(b, len + 1);
    if (recv_exact(sock, b->data, len) != 0)
        return -1;
    b->len = len;
    b->data[len] = 0;
    return 0;
}

static int send_request(int sock, const struct buf *msg, const int *fds, int nfds) {
    char control[CMSG_SPACE(2 * sizeof(int))];
    memset(control, 0, sizeof control);
    struct iovec iov = {.iov_base = msg->data, .iov_len = msg->len};
    struct msghdr hdr = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control,
                         .msg_controllen = CMSG_SPACE(nfds * sizeof(int))};
    struct cmsghdr *cmsg = CMSG_FIRSTHDR(&hdr);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(nfds * sizeof(int));
    memcpy(CMSG_DATA(cmsg), fds, nfds * sizeof(int));
    ssize_t sent = sendmsg(sock, &hdr, MSG_NOSIGNAL);
    if (sent < 0)
        return -1;
    size_t done = (size_t)sent;
    while (done < msg->len) {
        ssize_t n = send(sock, msg->data + done, msg->len - done, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        done += (size_t)n;
    }
    return 0;
}

int main(int argc, char **argv) {
    const char *name = plugin_name(argv[0]);
    if (argc > 1) {   /* a subcommand, not a CNI verb (`dhcp daemon`): the Python plugin serves it */
        extra_args = argv + 1;
        fallback(name, NULL, 0);
    }
    const char *command = getenv("CNI_COMMAND");
    if (command && strcmp(command, "VERSION") == 0) {
        fputs(VERSION_REPLY, stdout);
        return 0;
    }
    const char *mode = getenv("PYNET_DAEMON");
    if (mode && (strcmp(mode, "off") == 0 || strcmp(mode, "autostart") == 0))
        fallback(name, NULL, 0);   /* autostart: the Python front door starts the daemon */
    int sock = connect_daemon();
    if (sock < 0)
        fallback(name, NULL, 0);   /* nobody listens: stdin is still unread */

    struct buf in = {0};
    if (read_all(0, &in) != 0) {
        perror("pynet: cannot read the network configuration from stdin");
        return 1;
    }

    int fds[2], nfds = 0;
    fds[nfds] = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    if (fds[nfds] < 0)
        fallback(name, &in, 0);
    nfds++;
    /* As cni_plugins/handles.py OPEN_FLAGS: a FIFO must fail the daemon's type check, not hang here. */
    char status[16] = "-";
    const char *netns = getenv("CNI_NETNS");
    if (netns && *netns) {
        int fd = open(netns, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
        if (fd >= 0) {
            fds[nfds++] = fd;
            strcpy(status, "0");
        } else {
            snprintf(status, sizeof status, "%d", errno);
        }
    }

    struct buf msg = {0}, env = {0};
    for (char **e = environ; *e; e++) {
        if (e != environ)
            put(&env, "", 1);
        put(&env, *e, strlen(*e));
    }
    put_field(&msg, "cni", 3);
    put_field(&msg, name, strlen(name));
    put_field(&msg, env.data, env.len);
    put_field(&msg, in.data, in.len);
    put_field(&msg, status, strlen(status));

    struct buf code = {0}, text = {0};
    if (send_request(sock, &msg, fds, nfds) != 0 || recv_field(sock, &code) != 0 || recv_field(sock, &text) != 0)
        fallback(name, &in, 1);
    if (text.len && fwrite(text.data, 1, text.len, stdout) != text.len)
        return 1;
    if (fflush(stdout) != 0)
        return 1;
    return atoi(code.data);
}
