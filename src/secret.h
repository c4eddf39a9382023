/*
 * secret.h: freeing a string that may hold a password, a key or a file of them. It is wiped
 * first, so that no copy outlives its use in freed memory (a later allocation, a core dump).
 */
#ifndef SLUICE_SECRET_H
#define SLUICE_SECRET_H

#include <stdlib.h>
#include <string.h>

static inline void free_secret(char *secret)
{
    if (secret == NULL)
        return;
    explicit_bzero(secret, strlen(secret));
    free(secret);
}

#endif
