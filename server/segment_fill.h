/* Zero-filled Raft log segments (see segment_fill.c). */
#ifndef TN_SEGMENT_FILL_H_
#define TN_SEGMENT_FILL_H_

#include <stdbool.h>

/* Whether the process-wide posix_fallocate is this module's, i.e. whether
 * libraft's new segments are zero-filled. Referencing it also links the
 * module into whatever links the adapter. */
bool segmentFillActive(void);

#endif /* TN_SEGMENT_FILL_H_ */
