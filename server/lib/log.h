/* Server logging: one key=value line per event on stderr.
 *
 *   ts=2026-11-25T13:00:00.123Z level=info node=1 term=4 msg="became leader"
 *
 * The library (libtenure) never logs; only the daemon does. */
#ifndef TN_LIB_LOG_H_
#define TN_LIB_LOG_H_

#include <stdint.h>

enum tn_log_level { TN_LOG_DEBUG = 0, TN_LOG_INFO, TN_LOG_WARN, TN_LOG_ERROR };

/* Process-wide logging settings (the daemon has one node per process). */
void tnLogSetLevel(enum tn_log_level level);
/* Returns -1 for an unknown name. */
int tnLogParseLevel(const char *name);
void tnLogSetNode(uint64_t id);
void tnLogSetTerm(uint64_t term);
int tnLogEnabled(enum tn_log_level level);

/* @fmt produces the rest of the line after msg=: callers write
 * `"\"became leader\" leader=%llu"`. */
void tnLog(enum tn_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define tnDebugf(...)                    \
    do {                                 \
        if (tnLogEnabled(TN_LOG_DEBUG)) { \
            tnLog(TN_LOG_DEBUG, __VA_ARGS__); \
        }                                \
    } while (0)
#define tnInfof(...) tnLog(TN_LOG_INFO, __VA_ARGS__)
#define tnWarnf(...) tnLog(TN_LOG_WARN, __VA_ARGS__)
#define tnErrorf(...) tnLog(TN_LOG_ERROR, __VA_ARGS__)

#endif /* TN_LIB_LOG_H_ */
