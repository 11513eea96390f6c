/* A file's extents as the file system maps them (FIEMAP), for tests that
 * check how a file's blocks were allocated. */
#ifndef TN_TEST_EXTENTS_H_
#define TN_TEST_EXTENTS_H_

/* The number of extents of @fd (up to 64), with how many of them are
 * unwritten (fallocated, never written) in @unwritten; -1 when the file
 * system cannot tell (no FIEMAP, e.g. tmpfs). */
int fileExtents(int fd, int *unwritten);

#endif /* TN_TEST_EXTENTS_H_ */
