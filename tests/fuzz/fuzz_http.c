/* Fuzz target: the HTTP shim (server/http.c) as a client sees it.
 *
 * Input:
 *   u8   flags   bit 0: the dispatch refuses submissions (closing node)
 *                bit 1: pending requests are answered newest first
 *                bit 2: health says this node leads
 *                bits 3-7: n > 0: the client sends in pieces of n bytes
 *   u8   status  TN__STATUS__* of the made-up answers (mod 17; the value
 *                / 17 picks the lock mode they report)
 *   u16  n       big-endian length of a packed Tn__Response that answers
 *                every request instead (0 or undecodable: made up)
 *   n bytes      that Tn__Response
 *   ...          the bytes the client sends (one connection, then EOF)
 * The server is the real one on a libuv loop with a fake dispatch
 * (http_harness.c, which lists the checks). */
#include "fuzz.h"
#include "http_harness.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    hhInit();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fuzz_in in = { data, size, 0 };
    struct hh_options o = { 0 };
    uint8_t flags = fuzzU8(&in);
    size_t rlen;
    size_t len;
    const uint8_t *req;

    o.status = fuzzU8(&in);
    o.response = fuzzBytes(&in, fuzzU16(&in), &rlen);
    o.response_len = rlen;
    o.refuse = flags & 1;
    o.reverse = flags & 2;
    o.leader = flags & 4;
    o.chunk = flags >> 3;
    req = fuzzRest(&in, &len);
    hhRun(req, len, &o);
    return 0;
}
