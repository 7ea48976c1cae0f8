/*
 * Statement values and row-count buckets (see db_arg.h).
 */
#include <stdlib.h>

#include "minichat/db_arg.h"

int mc_db_args_add(mc_db_args_t *a, mc_db_arg_t v)
{
    mc_db_arg_t *nv;
    size_t cap;

    if (a->n == a->cap) {
        cap = a->cap ? 2 * a->cap : 64;
        nv = realloc(a->v, cap * sizeof(*nv));
        if (nv == NULL) {
            return -1;
        }
        a->v = nv;
        a->cap = cap;
    }
    a->v[a->n++] = v;
    return 0;
}

void mc_db_args_reset(mc_db_args_t *a)
{
    a->n = 0;
}

void mc_db_args_free(mc_db_args_t *a)
{
    free(a->v);
    a->v = NULL;
    a->n = 0;
    a->cap = 0;
}

size_t mc_db_rows_bucket(size_t n)
{
    size_t b = 1;

    while (b < n && b < MC_DB_ROWS_MAX) {
        b *= 4;
    }
    return b;
}
