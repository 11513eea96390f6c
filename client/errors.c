/* Error names and descriptions (one X-macro table, in tenure.h), version. */
#include "tenure.h"

#define TN__STR(x)  #x
#define TN__XSTR(x) TN__STR(x)

int tn_version_number(void)
{
    return TN_VERSION_NUMBER;
}

const char *tn_version_string(void)
{
    return TN__XSTR(TN_VERSION_MAJOR) "." TN__XSTR(
        TN_VERSION_MINOR) "." TN__XSTR(TN_VERSION_PATCH);
}

const char *tn_strerror(int rc)
{
    switch (rc) {
#define ERR_TEXT_CASE(NAME, VALUE, TEXT) \
    case VALUE:                          \
        return TEXT;
        TN_ERRNO_MAP(ERR_TEXT_CASE)
#undef ERR_TEXT_CASE
    default:
        return "unknown error";
    }
}

const char *tn_errname(int rc)
{
    switch (rc) {
#define ERR_NAME_CASE(NAME, VALUE, TEXT) \
    case VALUE:                          \
        return #NAME;
        TN_ERRNO_MAP(ERR_NAME_CASE)
#undef ERR_NAME_CASE
    default:
        return "UNKNOWN";
    }
}

const char *tn_mode_name(int mode)
{
    switch (mode) {
    case TN_MODE_EXCLUSIVE:
        return "exclusive";
    case TN_MODE_SHARED:
        return "shared";
    case TN_MODE_SEMAPHORE:
        return "semaphore";
    default:
        return "unknown";
    }
}
