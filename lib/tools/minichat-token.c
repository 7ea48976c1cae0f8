/*
 * minichat-token: prints an HS256 JWT for a user id, for `make token`, demos
 * and tests.  The secret comes from a file (trailing whitespace stripped), the
 * same file the dev nginx.conf names in minichat_jwt_secret_file.  Every
 * token carries `exp` (the module refuses tokens without it); --iss and
 * --aud add the claims that minichat_jwt_issuer and minichat_jwt_audience
 * ask for.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "minichat/jwt.h"

static void usage(void)
{
    fprintf(stderr, "usage: minichat-token --secret-file FILE [--ttl SECONDS] [--iss ISSUER] [--aud AUDIENCE] USER_ID\n"
                    "       prints a JWT with sub=USER_ID, exp=now+SECONDS (1..315360000; default 86400)\n"
                    "       and iss and aud when given\n");
}

int main(int argc, char **argv)
{
    const char *secret_file = NULL, *user = NULL, *iss = NULL, *aud = NULL;
    char secret[1024], token[MC_JWT_MAX], *end;
    unsigned long long sub;
    long long ttl = 86400;
    size_t n;
    FILE *f;
    int i, len;

    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--secret-file") == 0 && i + 1 < argc) {
            secret_file = argv[++i];
        } else if (strcmp(argv[i], "--ttl") == 0 && i + 1 < argc) {
            ttl = strtoll(argv[++i], &end, 10);
            if (*end != '\0' || end == argv[i] || ttl <= 0 || ttl > 315360000) {
                fprintf(stderr, "minichat-token: --ttl must be 1..315360000 seconds (tokens always expire), got \"%s\"\n",
                        argv[i]);
                return 2;
            }
        } else if (strcmp(argv[i], "--iss") == 0 && i + 1 < argc) {
            iss = argv[++i];
        } else if (strcmp(argv[i], "--aud") == 0 && i + 1 < argc) {
            aud = argv[++i];
        } else if (argv[i][0] != '-' && user == NULL) {
            user = argv[i];
        } else {
            usage();
            return 2;
        }
    }
    if (secret_file == NULL || user == NULL) {
        usage();
        return 2;
    }
    sub = strtoull(user, &end, 10);
    if (*user < '1' || *user > '9' || *end != '\0' || sub == 0) {
        fprintf(stderr, "minichat-token: user id must be a positive integer, got \"%s\"\n", user);
        return 2;
    }

    f = fopen(secret_file, "r");
    if (f == NULL) {
        perror(secret_file);
        return 1;
    }
    n = fread(secret, 1, sizeof(secret), f);
    fclose(f);
    while (n > 0 && (secret[n - 1] == '\n' || secret[n - 1] == '\r' || secret[n - 1] == ' ')) {
        n--;
    }
    if (n == 0 || n == sizeof(secret)) {
        fprintf(stderr, "minichat-token: \"%s\" must hold a secret of 1..1023 bytes\n", secret_file);
        return 1;
    }

    len = mc_jwt_sign_claims_hs256(sub, (long long)time(NULL) + ttl, iss, aud, (const uint8_t *)secret, n, token,
                                   sizeof(token));
    if (len < 0) {
        fprintf(stderr, "minichat-token: signing failed (--iss and --aud take at most a few hundred bytes)\n");
        return 1;
    }
    printf("%s\n", token);
    return 0;
}
