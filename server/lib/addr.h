/* IPv4 "host:port" addresses of the daemon's listeners and peers. */
#ifndef TN_LIB_ADDR_H_
#define TN_LIB_ADDR_H_

#include <uv.h>

/* Parse "127.0.0.1:7101" into @sa. Returns 0 or UV_EINVAL. */
int tnParseIpv4(const char *address, struct sockaddr_in *sa);

#endif /* TN_LIB_ADDR_H_ */
