/*
 * RESP, the Redis protocol: a command as Redis reads it, an array of bulk
 * strings ("*<n>\r\n" then "$<len>\r\n<bytes>\r\n" per argument).  The
 * module formats its commands with this and hands them to hiredis whole
 * (redisAsyncFormattedCommand), which costs less than hiredis's own
 * printf-style formatting of every argument.  Pure code.
 */
#ifndef MINICHAT_RESP_H
#define MINICHAT_RESP_H

#include <stddef.h>

/* Writes the command argv[0..argc) into out[0..size).  Returns its length,
 * or -1 when it does not fit or argc < 1 (out then holds nothing useful). */
long mc_resp_command(char *out, size_t size, int argc, const char *const *argv, const size_t *argvlen);

#endif
