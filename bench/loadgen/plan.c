/*
 * Who is who in a run: which users the connections are, which rooms they
 * share, which tokens they carry.  Pure arithmetic on the configuration,
 * so that the parent and every runner agree without talking.
 *
 * Receiving member g (0 <= g < conns) is user user_base + g and sits in
 * room g / room_size; room r's owner, who also sends into it, is user
 * user_base + conns + r.
 */
#include <time.h>

#include "minichat/jwt.h"

#include "loadgen.h"

int lg_rooms(const lg_config_t *cfg)
{
    if (cfg->mode != LG_MODE_DELIVER) {
        return 0;
    }
    return (cfg->conns + cfg->room_size - 1) / cfg->room_size;
}

int lg_total_conns(const lg_config_t *cfg)
{
    return cfg->conns + lg_rooms(cfg);
}

uint64_t lg_member_user(const lg_config_t *cfg, int g)
{
    return cfg->user_base + (uint64_t)g;
}

uint64_t lg_owner_user(const lg_config_t *cfg, int r)
{
    return cfg->user_base + (uint64_t)cfg->conns + (uint64_t)r;
}

int lg_token(const lg_config_t *cfg, uint64_t user, char *out, size_t size)
{
    /* valid a day: longer than any run */
    return mc_jwt_sign_hs256(user, (int64_t)time(NULL) + 86400, cfg->secret, cfg->secret_len, out, size);
}
