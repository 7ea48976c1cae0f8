/*
 * The services' clock for timers and intervals: CLOCK_MONOTONIC in
 * milliseconds, which never jumps with the wall clock.  Signed, so that the
 * difference of two readings (a deadline minus now) can go below zero.
 */
#ifndef MINICHAT_CLOCK_H
#define MINICHAT_CLOCK_H

#include <stdint.h>

/* Returns a monotonic time in milliseconds (arbitrary origin, never decreasing). */
int64_t mc_now_ms(void);

#endif
