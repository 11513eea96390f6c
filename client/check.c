/* Validation of caller input before it goes on the wire. */
#include "check.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

size_t checkText(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;

    while (i < len) {
        unsigned char b = p[i];
        uint32_t cp;
        size_t need;
        uint32_t min;

        if (b < 0x80) {
            if (b < 0x20 || b == 0x7f) {
                return i + 1;
            }
            i++;
            continue;
        }
        if (b >= 0xc2 && b <= 0xdf) {
            need = 1;
            cp = b & 0x1f;
            min = 0x80;
        } else if (b >= 0xe0 && b <= 0xef) {
            need = 2;
            cp = b & 0x0f;
            min = 0x800;
        } else if (b >= 0xf0 && b <= 0xf4) {
            need = 3;
            cp = b & 0x07;
            min = 0x10000;
        } else {
            return i + 1;
        }
        if (len - i <= need) {
            return i + 1;
        }
        for (size_t k = 1; k <= need; k++) {
            if ((p[i + k] & 0xc0) != 0x80) {
                return i + 1;
            }
            cp = cp << 6 | (p[i + k] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
            return i + 1;
        }
        if (cp >= 0x80 && cp <= 0x9f) { /* C1 controls */
            return i + 1;
        }
        i += need + 1;
    }
    return 0;
}

int checkResource(const char *resource, char *errmsg, size_t errlen)
{
    size_t len;
    size_t bad;

    if (resource == NULL || resource[0] == '\0') {
        snprintf(errmsg, errlen, "resource: empty");
        return -1;
    }
    len = strlen(resource);
    if (len > CHECK_RESOURCE_MAX) {
        snprintf(errmsg, errlen, "resource: %zu bytes, at most %d allowed", len,
                 CHECK_RESOURCE_MAX);
        return -1;
    }
    bad = checkText(resource, len);
    if (bad != 0) {
        snprintf(errmsg, errlen,
                 "resource: invalid UTF-8 or control character at byte %zu",
                 bad - 1);
        return -1;
    }
    return 0;
}
