/* powercut_shim.c: an LD_PRELOAD library that lets a test cut the power on one file.

   A kill -9 keeps the page cache: every write() the process made reaches the disk
   later, synced or not, so it cannot show what a power cut does. This shim keeps, for
   one file (POWERCUT_FILE), an undo log (POWERCUT_LOG) of every write not yet made
   durable. After killing the process, the test applies the log backwards
   (tests/powercut.py) and the file holds what a disk that honours fsync would hold
   after losing power at that instant: what was fsync'd, fdatasync'd or written through
   an O_DSYNC/O_SYNC descriptor, and nothing else (or, in its "random" mode, an arbitrary
   subset of the rest, torn at page boundaries).

   The log is written before each write it covers (a kill between the two undoes a write
   that never happened: harmless) and emptied after each successful fsync/fdatasync of
   the file. Records end with a trailer, so one torn by the kill is ignored.

   Record: u32 magic, u32 kind, u64 offset, u64 length, u64 old_size, u64 saved, then
   `saved` bytes (kind 1: the old bytes at offset; kind 2: the new bytes), u32 trailer.
   kind 1: a write not yet durable (undo it); kind 2: a durable write (keep it).

   POWERCUT_KILL_AT_WRITE=N makes the process SIGKILL itself right after its N-th write
   that is not yet durable: the power fails in the middle of a commit, between writing
   the pages and syncing them.

   LMDB (as py-lmdb bundles it) writes with pwrite, lseek+writev and write, syncs with
   fdatasync and writes meta pages through an O_DSYNC descriptor: all covered here. What
   is not modelled: directory entries (LMDB creates its files once), mmap'd writes (no
   writemap), and a disk that acknowledges a flush it did not do. */

#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

#define FDS_MAX 65536
#define MAGIC 0x54554350u   /* "PCUT" */
#define TRAILER 0x444e4521u /* "!END" */
#define KIND_UNDO 1u
#define KIND_DURABLE 2u

enum { UNTRACKED = 0, TRACKED = 1, TRACKED_DSYNC = 2 };

static unsigned char tracked[FDS_MAX];
static char target[PATH_MAX];
static int log_fd = -1;
static int read_fd = -1; /* the old bytes are read through our own descriptor */
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static long kill_at_write = 0; /* 0: never */
static long pending_writes = 0;

static int (*real_open)(const char *, int, ...);
static int (*real_open64)(const char *, int, ...);
static int (*real_openat)(int, const char *, int, ...);
static int (*real_openat64)(int, const char *, int, ...);
static int (*real_close)(int);
static ssize_t (*real_write)(int, const void *, size_t);
static ssize_t (*real_pwrite)(int, const void *, size_t, off_t);
static ssize_t (*real_pwrite64)(int, const void *, size_t, off_t);
static ssize_t (*real_writev)(int, const struct iovec *, int);
static ssize_t (*real_pwritev)(int, const struct iovec *, int, off_t);
static int (*real_ftruncate)(int, off_t);
static int (*real_fsync)(int);
static int (*real_fdatasync)(int);

__attribute__((constructor)) static void init(void) {
    real_open = dlsym(RTLD_NEXT, "open");
    real_open64 = dlsym(RTLD_NEXT, "open64");
    real_openat = dlsym(RTLD_NEXT, "openat");
    real_openat64 = dlsym(RTLD_NEXT, "openat64");
    real_close = dlsym(RTLD_NEXT, "close");
    real_write = dlsym(RTLD_NEXT, "write");
    real_pwrite = dlsym(RTLD_NEXT, "pwrite");
    real_pwrite64 = dlsym(RTLD_NEXT, "pwrite64");
    real_writev = dlsym(RTLD_NEXT, "writev");
    real_pwritev = dlsym(RTLD_NEXT, "pwritev");
    real_ftruncate = dlsym(RTLD_NEXT, "ftruncate");
    real_fsync = dlsym(RTLD_NEXT, "fsync");
    real_fdatasync = dlsym(RTLD_NEXT, "fdatasync");
    const char *file = getenv("POWERCUT_FILE");
    const char *log = getenv("POWERCUT_LOG");
    if (file == NULL || log == NULL || strlen(file) >= sizeof target)
        return;
    strcpy(target, file);
    const char *kill_at = getenv("POWERCUT_KILL_AT_WRITE");
    if (kill_at != NULL)
        kill_at_write = atol(kill_at);
    log_fd = real_open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
}

static void track(int fd, const char *path, int flags) {
    char resolved[PATH_MAX];
    if (fd < 0 || fd >= FDS_MAX || log_fd < 0)
        return;
    tracked[fd] = UNTRACKED;
    if (realpath(path, resolved) == NULL || strcmp(resolved, target) != 0)
        return;
    tracked[fd] = (flags & (O_DSYNC | O_SYNC)) ? TRACKED_DSYNC : TRACKED;
    pthread_mutex_lock(&mu);
    if (read_fd < 0)
        read_fd = real_open(target, O_RDONLY | O_CLOEXEC);
    pthread_mutex_unlock(&mu);
}

static int is_tracked(int fd) { return fd >= 0 && fd < FDS_MAX && tracked[fd] != UNTRACKED; }

static void write_all(int fd, const void *buf, size_t n) {
    const char *p = buf;
    while (n > 0) {
        ssize_t w = real_write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            abort(); /* a log we cannot write would make the test lie */
        }
        p += w;
        n -= (size_t)w;
    }
}

/* Log one write of `len` bytes at `off` (its data gathered from iov) before it happens.
   Called with mu held. */
static void log_write(int fd, off_t off, const struct iovec *iov, int iovcnt, size_t len) {
    struct stat st;
    uint32_t magic = MAGIC, kind, trailer = TRAILER;
    uint64_t head[4];
    if (fstat(read_fd, &st) != 0)
        abort();
    kind = tracked[fd] == TRACKED_DSYNC ? KIND_DURABLE : KIND_UNDO;
    uint64_t saved = 0;
    char *bytes = NULL;
    if (kind == KIND_UNDO) {
        if (off < st.st_size)
            saved = (uint64_t)st.st_size - (uint64_t)off < len ? (uint64_t)st.st_size - off : len;
        bytes = malloc(saved ? saved : 1);
        if (bytes == NULL)
            abort();
        size_t got = 0;
        while (got < saved) {
            ssize_t r = pread(read_fd, bytes + got, saved - got, off + (off_t)got);
            if (r <= 0)
                abort();
            got += (size_t)r;
        }
    } else {
        saved = len;
        bytes = malloc(len ? len : 1);
        if (bytes == NULL)
            abort();
        size_t at = 0;
        for (int i = 0; i < iovcnt; i++) {
            memcpy(bytes + at, iov[i].iov_base, iov[i].iov_len);
            at += iov[i].iov_len;
        }
    }
    head[0] = (uint64_t)off;
    head[1] = len;
    head[2] = (uint64_t)st.st_size;
    head[3] = saved;
    size_t total = 8 + sizeof head + saved + 4;
    char *rec = malloc(total);
    if (rec == NULL)
        abort();
    memcpy(rec, &magic, 4);
    memcpy(rec + 4, &kind, 4);
    memcpy(rec + 8, head, sizeof head);
    memcpy(rec + 8 + sizeof head, bytes, saved);
    memcpy(rec + 8 + sizeof head + saved, &trailer, 4);
    write_all(log_fd, rec, total); /* one write: a kill tears at most this record */
    free(rec);
    free(bytes);
}

/* After a write that is not durable yet (called with mu held): the moment to die? */
static void written(int fd) {
    if (tracked[fd] == TRACKED && kill_at_write > 0 && ++pending_writes == kill_at_write)
        kill(getpid(), SIGKILL);
}

static void log_truncate(int fd, off_t length) {
    /* A shrink loses bytes a power cut could bring back: log them as a write of the old
       bytes from `length`; a growth is a write of zeros. Either way kind UNDO. */
    struct stat st;
    if (fstat(read_fd, &st) != 0)
        abort();
    off_t from = length < st.st_size ? length : st.st_size;
    size_t len = (size_t)((length > st.st_size ? length : st.st_size) - from);
    char *zeros = calloc(len ? len : 1, 1);
    struct iovec iov = {zeros, len};
    unsigned char was = tracked[fd];
    tracked[fd] = TRACKED; /* a truncate is never durable by itself */
    log_write(fd, from, &iov, 1, len);
    tracked[fd] = was;
    free(zeros);
}

static void synced(int fd) {
    /* Everything written to the file so far is durable: nothing left to undo. */
    if (is_tracked(fd) && real_ftruncate(log_fd, 0) != 0)
        abort();
}

#define OPEN_MODE(flags)                                                                    \
    mode_t mode = 0;                                                                        \
    if ((flags) & (O_CREAT | O_TMPFILE)) {                                                  \
        va_list ap;                                                                         \
        va_start(ap, flags);                                                                \
        mode = va_arg(ap, mode_t);                                                          \
        va_end(ap);                                                                         \
    }

int open(const char *path, int flags, ...) {
    OPEN_MODE(flags)
    int fd = real_open(path, flags, mode);
    track(fd, path, flags);
    return fd;
}

int open64(const char *path, int flags, ...) {
    OPEN_MODE(flags)
    int fd = real_open64(path, flags, mode);
    track(fd, path, flags);
    return fd;
}

int openat(int dirfd, const char *path, int flags, ...) {
    OPEN_MODE(flags)
    int fd = real_openat(dirfd, path, flags, mode);
    if (path[0] == '/' || dirfd == AT_FDCWD)
        track(fd, path, flags);
    return fd;
}

int openat64(int dirfd, const char *path, int flags, ...) {
    OPEN_MODE(flags)
    int fd = real_openat64(dirfd, path, flags, mode);
    if (path[0] == '/' || dirfd == AT_FDCWD)
        track(fd, path, flags);
    return fd;
}

int close(int fd) {
    if (fd >= 0 && fd < FDS_MAX)
        tracked[fd] = UNTRACKED;
    return real_close(fd);
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off) {
    if (!is_tracked(fd))
        return real_pwrite(fd, buf, n, off);
    struct iovec iov = {(void *)buf, n};
    pthread_mutex_lock(&mu);
    log_write(fd, off, &iov, 1, n);
    ssize_t w = real_pwrite(fd, buf, n, off);
    written(fd);
    pthread_mutex_unlock(&mu);
    return w;
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off_t off) {
    if (!is_tracked(fd))
        return real_pwrite64(fd, buf, n, off);
    return pwrite(fd, buf, n, off);
}

ssize_t write(int fd, const void *buf, size_t n) {
    if (!is_tracked(fd))
        return real_write(fd, buf, n);
    struct iovec iov = {(void *)buf, n};
    pthread_mutex_lock(&mu);
    log_write(fd, lseek(fd, 0, SEEK_CUR), &iov, 1, n);
    ssize_t w = real_write(fd, buf, n);
    written(fd);
    pthread_mutex_unlock(&mu);
    return w;
}

ssize_t writev(int fd, const struct iovec *iov, int iovcnt) {
    if (!is_tracked(fd))
        return real_writev(fd, iov, iovcnt);
    size_t len = 0;
    for (int i = 0; i < iovcnt; i++)
        len += iov[i].iov_len;
    pthread_mutex_lock(&mu);
    log_write(fd, lseek(fd, 0, SEEK_CUR), iov, iovcnt, len);
    ssize_t w = real_writev(fd, iov, iovcnt);
    written(fd);
    pthread_mutex_unlock(&mu);
    return w;
}

ssize_t pwritev(int fd, const struct iovec *iov, int iovcnt, off_t off) {
    if (!is_tracked(fd))
        return real_pwritev(fd, iov, iovcnt, off);
    size_t len = 0;
    for (int i = 0; i < iovcnt; i++)
        len += iov[i].iov_len;
    pthread_mutex_lock(&mu);
    log_write(fd, off, iov, iovcnt, len);
    ssize_t w = real_pwritev(fd, iov, iovcnt, off);
    written(fd);
    pthread_mutex_unlock(&mu);
    return w;
}

int ftruncate(int fd, off_t length) {
    if (!is_tracked(fd))
        return real_ftruncate(fd, length);
    pthread_mutex_lock(&mu);
    log_truncate(fd, length);
    int r = real_ftruncate(fd, length);
    pthread_mutex_unlock(&mu);
    return r;
}

int fsync(int fd) {
    if (!is_tracked(fd))
        return real_fsync(fd);
    pthread_mutex_lock(&mu);
    int r = real_fsync(fd);
    if (r == 0)
        synced(fd);
    pthread_mutex_unlock(&mu);
    return r;
}

int fdatasync(int fd) {
    if (!is_tracked(fd))
        return real_fdatasync(fd);
    pthread_mutex_lock(&mu);
    int r = real_fdatasync(fd);
    if (r == 0)
        synced(fd);
    pthread_mutex_unlock(&mu);
    return r;
}
