/*
 * social_rng.h
 *		The deterministic random numbers of the social world (personas.c,
 *		friendship_models.c, communities.c).
 *
 * splitmix64 (Steele, Lea & Flood 2014): one 64-bit word of state, full
 * period, passes BigCrush, and cheap to seed per item.  Every generated thing
 * derives its own stream from (seed, purpose, index) with social_rng_for(),
 * so results do not depend on generation order, batch size or platform:
 * the same seed always gives the same agents and the same graph.  Postgres'
 * random() is never used, so the session's setseed() is left alone.
 */
#ifndef SOCIAL_RNG_H
#define SOCIAL_RNG_H

#include <stdint.h>

typedef struct SocialRng
{
	uint64_t	state;
} SocialRng;

static inline uint64_t
social_mix64(uint64_t z)
{
	z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
	return z ^ (z >> 31);
}

static inline uint64_t
social_rng_next(SocialRng *r)
{
	r->state += UINT64_C(0x9e3779b97f4a7c15);
	return social_mix64(r->state);
}

/* The stream for item `index` of purpose `purpose` under `seed`. */
static inline SocialRng
social_rng_for(uint64_t seed, uint64_t purpose, uint64_t index)
{
	SocialRng	r;

	r.state = social_mix64(seed ^ social_mix64(purpose * UINT64_C(0x9e3779b97f4a7c15) + index));
	return r;
}

/* Uniform in [0, n), n > 0 (Lemire's multiply-shift; bias < n / 2^64). */
static inline uint64_t
social_rng_below(SocialRng *r, uint64_t n)
{
	return (uint64_t) (((unsigned __int128) social_rng_next(r) * n) >> 64);
}

/* Uniform in [0, 1). */
static inline double
social_rng_double(SocialRng *r)
{
	return (social_rng_next(r) >> 11) * (1.0 / 9007199254740992.0);
}

#endif							/* SOCIAL_RNG_H */
