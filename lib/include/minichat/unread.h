/*
 * Per-message unread counts (KakaoTalk-style): for a page of messages, how
 * many room members have not read each one.  A member has read seq s when its
 * read pointer is at or above s, so unread(s) is the number of pointers below
 * s.  Pure code, no allocation, no I/O.
 */
#ifndef MINICHAT_UNREAD_H
#define MINICHAT_UNREAD_H

#include <stddef.h>
#include <stdint.h>

/* Sorts the m read pointers in place, highest first.  O(m log m). */
void mc_unread_sort(uint64_t *reads, size_t m);

/* For a page of n seqs sorted newest first (non-increasing) and m read
 * pointers sorted highest first (mc_unread_sort), writes into out[i] the
 * number of pointers below page[i].  O(m + n): one cumulative index walks the
 * pointers while the page goes from newest to oldest.  Returns 0, or -1 when
 * the page is not newest first (out is then incomplete). */
int mc_unread_walk(const uint64_t *sorted_reads, size_t m, const uint64_t *page, size_t n, size_t *out);

/* Both steps: sorts the caller's reads array (it is reordered, nothing is
 * allocated), then walks the page.  Members without a pointer must be passed
 * as 0 by the caller.  Returns 0 or -1 as mc_unread_walk(). */
int mc_unread_counts(uint64_t *reads, size_t m, const uint64_t *page, size_t n, size_t *out);

#endif
