/*
 * A ban lifted by hand, in MySQL: the statements the operator's tool
 * (minichat-ban, blocking) and the relay-worker (the server API's unban,
 * through a BanRequest with lift) both run, so that the two say the same.
 * Redis's half is lua/ban.lua, which both run as well.  One argument: the
 * user id.
 */
#ifndef MINICHAT_BAN_H
#define MINICHAT_BAN_H

/* the user is active from now on, whatever ban MySQL holds (permanent included) */
#define MC_BAN_SQL_LIFT "UPDATE users SET status='active', banned_until=NULL WHERE id=?"
/* ... and the strikes so far are forgotten */
#define MC_BAN_SQL_FORGIVE "UPDATE users SET status='active', banned_until=NULL, strikes=0 WHERE id=?"

#endif
