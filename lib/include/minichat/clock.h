/*
 * The services' clock for timers and intervals: CLOCK_MONOTONIC in
 * milliseconds, which never jumps with the wall clock.  Signed, so that the
 * difference of two readings (a deadline minus now) can go below zero.  The
 * wall clock is here too, for the one comparison that crosses processes.
 */
#ifndef MINICHAT_CLOCK_H
#define MINICHAT_CLOCK_H

#include <stdint.h>

/* Returns a monotonic time in milliseconds (arbitrary origin, never decreasing). */
int64_t mc_now_ms(void);

/* The same clock in microseconds, for latencies below a millisecond (the
 * load generator's send->receive times: CLOCK_MONOTONIC is one clock for
 * every process of a host, so a stamp taken in one can be compared in
 * another). */
int64_t mc_now_us(void);

/* Returns the wall clock in milliseconds since the epoch: only for comparing
 * with a time another process on the same host took from its wall clock
 * (nginx stamps when a message's seq was assigned). */
int64_t mc_wall_ms(void);

#endif
