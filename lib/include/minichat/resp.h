/*
 * RESP, the Redis protocol: a command as Redis reads it, an array of bulk
 * strings ("*<n>\r\n" then "$<len>\r\n<bytes>\r\n" per argument).  The
 * module formats its commands with this straight into a connection's
 * output buffer, and the relay-worker's blocking client does the same.
 * Pure code.
 */
#ifndef MINICHAT_RESP_H
#define MINICHAT_RESP_H

#include <stddef.h>

/* Writes the command argv[0..argc) into out[0..size).  Returns its length,
 * or -1 when it does not fit or argc < 1 (out then holds nothing useful). */
long mc_resp_command(char *out, size_t size, int argc, const char *const *argv, const size_t *argvlen);
/* Returns the length mc_resp_command writes for argv[0..argc) (argc >= 1),
 * so a caller can make room first. */
size_t mc_resp_command_size(int argc, const size_t *argvlen);

#endif
