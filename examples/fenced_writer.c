/* A fenced writer: holds a tenure lock and appends records to a store that
 * refuses any token lower than the highest it has accepted.
 *
 *   fenced_writer ENDPOINTS RESOURCE STORE_FILE COUNT [HOLDER]
 *
 * The "store" is a file of lines "<token> <holder> <n>"; storeAppend() is
 * what a real store (database, object store, service) would do on its side:
 * compare the request's token with the highest one seen, atomically with
 * the write. Timing (tn_lock_valid) keeps a healthy holder from writing
 * after its lease; the token keeps a paused or partitioned one from
 * corrupting the store even if it does.
 *
 * Exit status: 0 all records written, 3 the lock was held by someone else
 * for the whole wait, 4 the cluster was unavailable, 5 the store refused a
 * write (a newer holder exists), 6 the lease became invalid before the end,
 * 1 other errors. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include <tenure.h>

/* Store side: append "<token> <holder> <n>" unless @token is lower than the
 * highest token in the file. Returns 0, 1 when refused, -1 on I/O errors. */
static int storeAppend(const char *path,
                       uint64_t token,
                       const char *holder,
                       int n)
{
    FILE *f;
    char line[512];
    uint64_t highest = 0;
    int fd = open(path, O_RDWR | O_CREAT | O_APPEND, 0644);
    int rv = 0;

    if (fd < 0) {
        return -1;
    }
    if (flock(fd, LOCK_EX) != 0) { /* check and write atomically */
        close(fd);
        return -1;
    }
    f = fdopen(fd, "a+");
    if (f == NULL) {
        close(fd);
        return -1;
    }
    rewind(f);
    while (fgets(line, sizeof line, f) != NULL) {
        uint64_t t = strtoull(line, NULL, 10);
        if (t > highest) {
            highest = t;
        }
    }
    if (token < highest) {
        rv = 1; /* fenced off: someone newer has written */
    } else if (fprintf(f, "%" PRIu64 " %s %d\n", token, holder, n) < 0 ||
               fflush(f) != 0) {
        rv = -1;
    }
    fclose(f); /* also drops the flock */
    return rv;
}

int main(int argc, char **argv)
{
    struct tn_conflict who;
    struct tn_acquire_opts ao;
    const char *holder;
    tn_client *c;
    tn_session *s;
    tn_lock *l;
    int count;
    int code = 0;
    int rc;

    if (argc < 5) {
        fprintf(stderr,
                "usage: %s ENDPOINTS RESOURCE STORE_FILE COUNT [HOLDER]\n",
                argv[0]);
        return 2;
    }
    count = atoi(argv[4]);
    holder = argc > 5 ? argv[5] : "fenced-writer";

    rc = tn_client_open(argv[1], NULL, &c);
    if (rc != TN_OK) {
        fprintf(stderr, "open: %s\n", tn_strerror(rc));
        return 1;
    }
    rc = tn_session_open(c, holder, 10000, NULL, &s);
    if (rc != TN_OK) {
        fprintf(stderr, "session: %s\n", tn_client_errmsg(c));
        tn_client_close(c);
        return rc == TN_UNAVAILABLE || rc == TN_NO_QUORUM ? 4 : 1;
    }
    memset(&ao, 0, sizeof ao);
    ao.wait_ms = 30000;
    ao.conflict = &who;
    rc = tn_lock_acquire(s, argv[2], &ao, &l);
    if (rc != TN_OK) {
        if (rc == TN_HELD || rc == TN_LOCK_DELAY) {
            fprintf(stderr, "still held by %s after 30 s\n", who.holder.holder);
            code = 3;
        } else {
            fprintf(stderr, "acquire: %s\n", tn_client_errmsg(c));
            code = rc == TN_UNAVAILABLE || rc == TN_NO_QUORUM ? 4 : 1;
        }
        tn_session_close(s);
        tn_client_close(c);
        return code;
    }
    printf("%s holds %s with token %" PRIu64 "\n", holder, argv[2],
           tn_lock_token(l));
    for (int i = 1; i <= count; i++) {
        if (!tn_lock_valid(l)) { /* right before every write */
            fprintf(stderr, "lease no longer safe after %d records\n", i - 1);
            code = 6;
            break;
        }
        rc = storeAppend(argv[3], tn_lock_token(l), holder, i);
        if (rc == 1) {
            fprintf(stderr, "store refused token %" PRIu64 "\n",
                    tn_lock_token(l));
            code = 5;
            break;
        }
        if (rc != 0) {
            fprintf(stderr, "store: %s\n", strerror(errno));
            code = 1;
            break;
        }
    }
    tn_lock_release(l);
    tn_lock_free(l);
    tn_session_close(s);
    tn_client_close(c);
    return code;
}
