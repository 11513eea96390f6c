/* Common declarations of the fuzz harnesses.
 *
 * Every harness defines LLVMFuzzerTestOneInput (and may define
 * LLVMFuzzerInitialize). The same source is linked two ways:
 *   - with clang's libFuzzer (-fsanitize=fuzzer) when TN_FUZZ=ON: a real
 *     coverage-guided fuzzer (tests/fuzz/run.sh);
 *   - with replay_main.c under any compiler: runs every file of the seed
 *     corpus and of regressions/ once (the fuzz_replay_* tests of the
 *     default suite).
 *
 * A harness reports a bug by crashing (abort() through FUZZ_CHECK, or a
 * sanitizer report); returning normally means the input was handled. */
#ifndef TN_FUZZ_H_
#define TN_FUZZ_H_

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* An invariant the code under test must keep: abort with a message (the
 * fuzzer then saves the input as a crash). */
#define FUZZ_CHECK(cond, ...)                                            \
    do {                                                                 \
        if (!(cond)) {                                                   \
            fprintf(stderr, "%s:%d: invariant violated: %s: ", __FILE__, \
                    __LINE__, #cond);                                    \
            fprintf(stderr, __VA_ARGS__);                                \
            fputc('\n', stderr);                                         \
            abort();                                                     \
        }                                                                \
    } while (0)

/* A little reader over the fuzz input, for harnesses that take a few
 * control bytes before the payload. Reads past the end give zeros. */
struct fuzz_in
{
    const uint8_t *p;
    size_t len;
    size_t off;
};

static inline uint8_t fuzzU8(struct fuzz_in *in)
{
    return in->off < in->len ? in->p[in->off++] : 0;
}

static inline uint16_t fuzzU16(struct fuzz_in *in)
{
    uint16_t hi = fuzzU8(in);
    return (uint16_t)(hi << 8 | fuzzU8(in));
}

/* Up to @n bytes from the input; *got says how many there were. */
static inline const uint8_t *fuzzBytes(struct fuzz_in *in, size_t n, size_t *got)
{
    const uint8_t *p = in->p + in->off;
    size_t left = in->len - in->off;

    *got = n < left ? n : left;
    in->off += *got;
    return p;
}

static inline const uint8_t *fuzzRest(struct fuzz_in *in, size_t *got)
{
    return fuzzBytes(in, in->len - in->off, got);
}

#endif /* TN_FUZZ_H_ */
