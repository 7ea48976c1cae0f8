/*
 * The per-connection cache of prepared statements (see db_stmt.h).  A
 * linear scan over 64 slots (length first, then the bytes) costs less than
 * the round trip it saves, and keeps the code obvious.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <errmsg.h>

#include "minichat/db_stmt.h"

/* Closes a slot's statement and frees its text. */
static void stmt_slot_free(mc_db_stmt_slot_t *s)
{
    if (s->st != NULL) {
        mysql_stmt_close(s->st);
    }
    free(s->sql);
    memset(s, 0, sizeof(*s));
}

MYSQL_STMT *mc_db_stmts_get(mc_db_stmts_t *c, MYSQL *m, const char *sql, size_t len, unsigned *err, char *msg,
                            size_t msg_size)
{
    mc_db_stmt_slot_t *s, *victim = NULL;
    MYSQL_STMT *st;
    size_t i;

    c->tick++;
    for (i = 0; i < MC_DB_STMT_CACHE; i++) {
        s = &c->slot[i];
        if (s->st != NULL && s->len == len && memcmp(s->sql, sql, len) == 0) {
            s->used = c->tick;
            return s->st;
        }
        if (victim == NULL || (victim->st != NULL && (s->st == NULL || s->used < victim->used))) {
            victim = s;
        }
    }

    st = mysql_stmt_init(m);
    if (st == NULL) {
        *err = CR_OUT_OF_MEMORY;
        snprintf(msg, msg_size, "out of memory");
        return NULL;
    }
    if (mysql_stmt_prepare(st, sql, (unsigned long)len) != 0) {
        *err = mysql_stmt_errno(st) ? mysql_stmt_errno(st) : CR_UNKNOWN_ERROR;
        snprintf(msg, msg_size, "%s", mysql_stmt_error(st));
        mysql_stmt_close(st);
        return NULL;
    }
    stmt_slot_free(victim);
    victim->sql = malloc(len + 1);
    if (victim->sql == NULL) {
        mysql_stmt_close(st);
        *err = CR_OUT_OF_MEMORY;
        snprintf(msg, msg_size, "out of memory");
        return NULL;
    }
    memcpy(victim->sql, sql, len);
    victim->sql[len] = '\0';
    victim->len = len;
    victim->st = st;
    victim->used = c->tick;
    c->prepared++;
    return st;
}

void mc_db_stmts_drop(mc_db_stmts_t *c, MYSQL_STMT *st)
{
    size_t i;

    for (i = 0; i < MC_DB_STMT_CACHE; i++) {
        if (c->slot[i].st == st) {
            stmt_slot_free(&c->slot[i]);
            return;
        }
    }
}

void mc_db_stmts_clear(mc_db_stmts_t *c)
{
    size_t i;

    for (i = 0; i < MC_DB_STMT_CACHE; i++) {
        stmt_slot_free(&c->slot[i]);
    }
}
