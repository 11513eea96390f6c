/* Common header of every test: cmocka needs these includes, in this order. */
#ifndef TN_TEST_H_
#define TN_TEST_H_

/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
/* clang-format on */

#endif /* TN_TEST_H_ */
