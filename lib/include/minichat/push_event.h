/*
 * The offline-push event: one JSON object per (message, offline recipient),
 * the value of a record on the push topic (docs/push.md is its schema).
 * Pure code: jansson writes the JSON (so every string is escaped as JSON
 * wants), the preview is the body's first MC_PUSH_PREVIEW_CHARS characters,
 * cut between whole UTF-8 characters (lib/src/utf8.c).
 */
#ifndef MINICHAT_PUSH_EVENT_H
#define MINICHAT_PUSH_EVENT_H

#include <stddef.h>
#include <stdint.h>

#include "minichat/buf.h"
#include "minichat/msgbatch.h"

/* The schema version written as "v"; bumped only for a change that breaks a reader. */
#define MC_PUSH_EVENT_VERSION 1
/* Longest preview, in characters. */
#define MC_PUSH_PREVIEW_CHARS 100

/* Writes into out (replacing its contents) the event telling `user` about
 * the text message row; the row's body must be valid UTF-8 (the batch's
 * rows are).  Returns 0, or -1 when out of memory or the body is not valid
 * UTF-8 (out is then empty). */
int mc_push_event_json(uint64_t user, const mc_msgrow_t *row, mc_buf_t *out);

#endif
