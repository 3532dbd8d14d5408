/*
 * hmac.h: HMAC-SHA256 of many short messages under one key, for hmac.c and tokens.c.
 *
 * RFC 2104 on OpenSSL's SHA-256: the key's inner and outer pad blocks are hashed once into
 * two hash states (hmac_key_init), and each message then costs copies of those states plus
 * its own blocks and one outer block.  OpenSSL picks its fastest SHA-256 code for the CPU
 * (the x86 SHA extensions where present).  The low-level SHA256_* interface is used because
 * its context is a plain struct that can be copied without allocation; it is declared
 * deprecated since OpenSSL 3.0, hence the API level below.
 */
#ifndef JIGSAW_HMAC_H
#define JIGSAW_HMAC_H

#ifndef OPENSSL_API_COMPAT
#define OPENSSL_API_COMPAT 10101
#endif
#include <openssl/crypto.h>
#include <openssl/sha.h>

#include "kernel.h"

/* An HMAC-SHA256 key made ready for many messages: the hash states after its pad blocks. */
typedef struct {
    SHA256_CTX inner;
    SHA256_CTX outer;
} hmac_key;

/* RFC 2104 key preparation (a key longer than the 64-byte block is hashed first). */
void hmac_key_init(hmac_key *key, const uint8_t *bytes, size_t length);
/* HMAC-SHA256 under key of parts[0] || ... || parts[count - 1], as the digest's 8
 * little-endian uint32 words.  Safe without the GIL: key is only read.  Defined here so that
 * the loops calling it once per message (hmac.c, tokens.c) inline it. */
static inline void hmac_words_of(const hmac_key *key, const uint8_t *const *parts,
                                 const size_t *lengths, int count, uint32_t words[8]) {
    uint8_t inner[SHA256_DIGEST_LENGTH], digest[SHA256_DIGEST_LENGTH];
    SHA256_CTX context = key->inner;
    for (int p = 0; p < count; p++) {
        SHA256_Update(&context, parts[p], lengths[p]);
    }
    SHA256_Final(inner, &context);
    context = key->outer;
    SHA256_Update(&context, inner, sizeof(inner));
    SHA256_Final(digest, &context);
    for (int j = 0; j < 8; j++) {
        words[j] = (uint32_t)digest[4 * j] | ((uint32_t)digest[4 * j + 1] << 8) |
                   ((uint32_t)digest[4 * j + 2] << 16) | ((uint32_t)digest[4 * j + 3] << 24);
    }
}
/* 1 when path is -1 (the default) or the index of a supported path of hmac_paths(), else 0
 * with ValueError set, naming function. */
int hmac_path_valid(int path, const char *function);

#endif /* JIGSAW_HMAC_H */
