/* placeholder until the consumer branch's unread.c lands (merge takes theirs) */
#ifndef MINICHAT_UNREAD_H
#define MINICHAT_UNREAD_H
#include <stddef.h>
#include <stdint.h>
void mc_unread_prepare(uint64_t *pointers, size_t n);
void mc_unread_counts(const uint64_t *pointers, size_t n, const uint64_t *seqs, size_t count, uint32_t *out);
#endif
