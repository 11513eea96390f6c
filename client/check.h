/* Validation of caller input before it goes on the wire. */
#ifndef TN_CLIENT_CHECK_H_
#define TN_CLIENT_CHECK_H_

#include <stddef.h>

#define CHECK_RESOURCE_MAX 512

/* 0 if @resource is 1..512 bytes of valid UTF-8 without control characters
 * (C0, DEL, C1); otherwise -1 with a message naming the problem. */
int checkResource(const char *resource, char *errmsg, size_t errlen);

/* 0 if @s is valid UTF-8 (no overlong forms, no surrogates, <= U+10FFFF)
 * and has no control characters; else the byte offset + 1 of the first bad
 * byte. */
size_t checkText(const char *s, size_t len);

#endif /* TN_CLIENT_CHECK_H_ */
