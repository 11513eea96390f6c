/* Server logging: key=value lines on stderr. */
#include "lib/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static enum tn_log_level logLevel = TN_LOG_INFO;
static uint64_t logNode;
static uint64_t logTerm;

static const char *const logNames[] = { "debug", "info", "warn", "error" };

void tnLogSetLevel(enum tn_log_level level)
{
    logLevel = level;
}

int tnLogParseLevel(const char *name)
{
    for (int i = 0; i < 4; i++) {
        if (strcmp(name, logNames[i]) == 0) {
            return i;
        }
    }
    return -1;
}

void tnLogSetNode(uint64_t id)
{
    logNode = id;
}

void tnLogSetTerm(uint64_t term)
{
    logTerm = term;
}

int tnLogEnabled(enum tn_log_level level)
{
    return level >= logLevel;
}

void tnLog(enum tn_log_level level, const char *fmt, ...)
{
    char line[2048];
    struct timespec ts;
    struct tm tm;
    size_t n;
    va_list ap;

    if (!tnLogEnabled(level)) {
        return;
    }
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    n = strftime(line, sizeof line, "ts=%Y-%m-%dT%H:%M:%S", &tm);
    n += (size_t)snprintf(line + n, sizeof line - n,
                          ".%03ldZ level=%s node=%llu term=%llu msg=",
                          ts.tv_nsec / 1000000, logNames[level],
                          (unsigned long long)logNode,
                          (unsigned long long)logTerm);
    va_start(ap, fmt);
    if (n < sizeof line) {
        vsnprintf(line + n, sizeof line - n, fmt, ap);
    }
    va_end(ap);
    /* One write per line so that lines from one process never interleave. */
    n = strlen(line);
    if (n >= sizeof line - 1) {
        n = sizeof line - 2;
    }
    line[n] = '\n';
    fwrite(line, 1, n + 1, stderr);
}
