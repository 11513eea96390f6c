/* Leader election with tenure: every candidate waits in the lock's queue;
 * the holder is the leader, and leads only while its lease is safe.
 *
 *   leader_election ENDPOINTS ELECTION NAME SECONDS
 *
 * Runs for SECONDS. While leading it prints "leader NAME token T" once per
 * term and does its work in small steps, checking tn_lock_valid() before
 * each one (and passing the token to whatever it drives). On jeopardy it
 * stops leading at once; when the session is lost it opens a new one and
 * stands again; it resigns (releases) before exiting, so another candidate
 * takes over without waiting for a TTL. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <tenure.h>

static void sleepMs(long ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
}

static long nowMs(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void onJeopardy(tn_session *s, void *data)
{
    (void)s;
    (void)data;
    fprintf(stderr, "lease in jeopardy: stepping down\n");
}

int main(int argc, char **argv)
{
    struct tn_session_opts so;
    tn_client *c;
    long end;
    int rc;

    if (argc != 5) {
        fprintf(stderr, "usage: %s ENDPOINTS ELECTION NAME SECONDS\n",
                argv[0]);
        return 2;
    }
    end = nowMs() + atol(argv[4]) * 1000;
    rc = tn_client_open(argv[1], NULL, &c);
    if (rc != TN_OK) {
        fprintf(stderr, "open: %s\n", tn_strerror(rc));
        return 1;
    }
    memset(&so, 0, sizeof so);
    so.on_jeopardy = onJeopardy;

    while (nowMs() < end) {
        struct tn_acquire_opts ao;
        tn_session *s;
        tn_lock *l;

        rc = tn_session_open(c, argv[3], 3000, &so, &s);
        if (rc != TN_OK) {
            fprintf(stderr, "session: %s\n", tn_client_errmsg(c));
            sleepMs(500);
            continue;
        }
        while (nowMs() < end) {
            long left = end - nowMs();
            memset(&ao, 0, sizeof ao);
            ao.wait_ms = left < 10000 ? (uint32_t)left : 10000;
            rc = tn_lock_acquire(s, argv[2], &ao, &l);
            if (rc == TN_HELD) {
                continue; /* someone else leads; keep waiting in line */
            }
            if (rc != TN_OK) {
                fprintf(stderr, "acquire: %s\n", tn_client_errmsg(c));
                break; /* e.g. the session was lost: open a new one */
            }
            printf("leader %s token %" PRIu64 "\n", argv[3],
                   tn_lock_token(l));
            fflush(stdout);
            while (nowMs() < end && tn_lock_valid(l)) {
                sleepMs(50); /* one step of leader work, fenced by token */
            }
            if (tn_lock_valid(l)) {
                tn_lock_release(l); /* resign: time is up */
            } else {
                printf("follower %s (lost the lease)\n", argv[3]);
                fflush(stdout);
            }
            tn_lock_free(l);
            if (!tn_session_valid(s)) {
                break;
            }
        }
        tn_session_close(s);
    }
    tn_client_close(c);
    return 0;
}
