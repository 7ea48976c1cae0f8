/*
 * MiniChat nginx module: configuration and the worker's life cycle.
 *
 * Directives live at the http level (one chat service per nginx); locations
 * opt in with `minichat_ws` (the WebSocket endpoint), `minichat_api` (the
 * REST endpoints), `minichat_server_api` (the app backend's endpoints,
 * _server_api.c), `minichat_metrics` (Prometheus's text) and
 * `minichat_ws_echo` (an echo WebSocket for conformance tests); the
 * location-level settings are the echo's message limit,
 * permessage-deflate's (minichat_ws_deflate*) and the server API's keys
 * (minichat_server_api_key_file).  Each worker opens its Redis and relay connections in
 * init_process and closes them in exit_process, so a graceful quit leaves no
 * socket behind.
 *
 * Every directive with a number, size or time has a range, given in the
 * bounds tables below (checked by _bounds.c as the value is read); checks
 * that relate two directives are in init_main_conf.
 */
#include "ngx_http_minichat_module.h"
#include "minichat/origin.h"


static void *ngx_http_minichat_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_minichat_init_main_conf(ngx_conf_t *cf, void *conf);
static void *ngx_http_minichat_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_minichat_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child);
static char *ngx_http_minichat_redis(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
static char *ngx_http_minichat_relay(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
static char *ngx_http_minichat_secret_file(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
static char *ngx_http_minichat_redis_password_file(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
static char *ngx_http_minichat_location(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
static char *ngx_http_minichat_allowed_origins(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
static ngx_int_t ngx_http_minichat_init_process(ngx_cycle_t *cycle);
static void ngx_http_minichat_exit_process(ngx_cycle_t *cycle);


/* The handlers of the locations (minichat_ws, ...): the post field of
 * their commands, for ngx_http_minichat_location. */
static ngx_http_handler_pt  ngx_http_minichat_ws_content = ngx_http_minichat_ws_handler;
static ngx_http_handler_pt  ngx_http_minichat_echo_content = ngx_http_minichat_echo_handler;
static ngx_http_handler_pt  ngx_http_minichat_api_content = ngx_http_minichat_api_handler;
static ngx_http_handler_pt  ngx_http_minichat_metrics_content = ngx_http_minichat_metrics_handler;
static ngx_http_handler_pt  ngx_http_minichat_status_content = ngx_http_minichat_status_handler;
static ngx_http_handler_pt  ngx_http_minichat_ready_content = ngx_http_minichat_ready_handler;


/* Every directive's range (docs/directives.md lists them). */
static ngx_conf_num_bounds_t ngx_http_minichat_log_max_bounds = {
    ngx_conf_check_num_bounds, 1, 1000000
};

static ngx_conf_num_bounds_t ngx_http_minichat_members_cache_bounds = {
    ngx_conf_check_num_bounds, 0, 1000000
};

static ngx_http_minichat_bounds_t ngx_http_minichat_max_message_bounds = {
    ngx_http_minichat_bounds_size, 128, 1024 * 1024, 0, "between 128 and 1m"
};

static ngx_http_minichat_bounds_t ngx_http_minichat_send_queue_bounds = {
    ngx_http_minichat_bounds_size, 256, 1024 * 1024 * 1024, 0, "between 256 and 1g"
};

static ngx_http_minichat_bounds_t ngx_http_minichat_log_bytes_bounds = {
    ngx_http_minichat_bounds_size, 1024, 1024 * 1024 * 1024, 0, "between 1k and 1g"
};

static ngx_http_minichat_bounds_t ngx_http_minichat_echo_max_message_bounds = {
    ngx_http_minichat_bounds_size, 128, 64 * 1024 * 1024, 0, "between 128 and 64m"
};

static ngx_http_minichat_bounds_t ngx_http_minichat_dedup_ttl_bounds = {
    ngx_http_minichat_bounds_sec, 60, 30 * 86400, 0, "between 1m and 30d"
};

static ngx_http_minichat_bounds_t ngx_http_minichat_reconnect_bounds = {
    ngx_http_minichat_bounds_msec, 10, 60000, 0, "between 10ms and 1m"
};

static ngx_http_minichat_bounds_t ngx_http_minichat_timeout_bounds = {
    ngx_http_minichat_bounds_msec, 10, 600000, 0, "between 10ms and 10m"
};

static ngx_http_minichat_bounds_t ngx_http_minichat_repair_after_bounds = {
    ngx_http_minichat_bounds_msec, 2000, 3600000, 1, "between 2s and 1h, or 0 (off)"
};

static ngx_http_minichat_bounds_t ngx_http_minichat_handshake_bounds = {
    ngx_http_minichat_bounds_msec, 100, 600000, 0, "between 100ms and 10m"
};

static ngx_http_minichat_bounds_t ngx_http_minichat_session_ttl_bounds = {
    ngx_http_minichat_bounds_msec, 3000, 86400000, 0, "between 3s and 1d"
};

static ngx_http_minichat_bounds_t ngx_http_minichat_typing_bounds = {
    ngx_http_minichat_bounds_msec, 10, 3600000, 1, "0 (off) or between 10ms and 1h"
};

static ngx_http_minichat_bounds_t ngx_http_minichat_ping_bounds = {
    ngx_http_minichat_bounds_msec, 1000, 3600000, 1, "0 (off) or between 1s and 1h"
};

static ngx_http_minichat_bounds_t ngx_http_minichat_ipcap_zone_bounds = {
    ngx_http_minichat_bounds_size, 32 * 1024, 1024 * 1024 * 1024, 0, "between 32k and 1g"
};

static ngx_conf_post_t ngx_http_minichat_text_post = {
    ngx_http_minichat_bounds_text
};


static ngx_conf_num_bounds_t ngx_http_minichat_deflate_level_bounds = {
    ngx_conf_check_num_bounds, 1, 9
};


static ngx_conf_enum_t ngx_http_minichat_limit_redis_down[] = {
    { ngx_string("open"), NGX_HTTP_MINICHAT_LIMIT_OPEN },
    { ngx_string("closed"), NGX_HTTP_MINICHAT_LIMIT_CLOSED },
    { ngx_null_string, 0 }
};


static ngx_command_t ngx_http_minichat_commands[] = {

    { ngx_string("minichat_node"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_minichat_main_conf_t, node),
      NULL },

    { ngx_string("minichat_redis"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_minichat_redis,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("minichat_relay"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_minichat_relay,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("minichat_jwt_secret"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_minichat_main_conf_t, jwt_secret),
      NULL },

    { ngx_string("minichat_jwt_issuer"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_minichat_main_conf_t, jwt_issuer),
      &ngx_http_minichat_text_post },

    { ngx_string("minichat_jwt_audience"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_minichat_main_conf_t, jwt_audience),
      &ngx_http_minichat_text_post },

    { ngx_string("minichat_allowed_origins"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_http_minichat_allowed_origins,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("minichat_jwt_secret_file"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_minichat_secret_file,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("minichat_max_message_size"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_minichat_main_conf_t, max_message_size),
      &ngx_http_minichat_max_message_bounds },

    { ngx_string("minichat_send_queue_size"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_minichat_main_conf_t, send_queue_size),
      &ngx_http_minichat_send_queue_bounds },

    { ngx_string("minichat_recent_log_size"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_minichat_main_conf_t, log_max),
      &ngx_http_minichat_log_max_bounds },

    { ngx_string("minichat_recent_log_bytes"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_minichat_main_conf_t, log_bytes),
      &ngx_http_minichat_log_bytes_bounds },

    { ngx_string("minichat_members_cache"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_minichat_main_conf_t, members_cache),
      &ngx_http_minichat_members_cache_bounds },

    { ngx_string("minichat_history_read_ahead"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_minichat_main_conf_t, history_read_ahead),
      NULL },

    { ngx_string("minichat_dedup_ttl"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_minichat_main_conf_t, idem_ttl),
      &ngx_http_minichat_dedup_ttl_bounds },

    { ngx_string("minichat_reconnect_interval"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_minichat_main_conf_t, reconnect),
      &ngx_http_minichat_reconnect_bounds },

    { ngx_string("minichat_relay_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_minichat_main_conf_t, relay_timeout),
      &ngx_http_minichat_timeout_bounds },

    { ngx_string("minichat_repair_after"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_minichat_main_conf_t, repair_after),
      &ngx_http_minichat_repair_after_bounds },

    { ngx_string("minichat_redis_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_minichat_main_conf_t, redis_timeout),
      &ngx_http_minichat_timeout_bounds },

    { ngx_string("minichat_redis_cluster"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_http_minichat_redis_cluster_conf,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("minichat_redis_connect_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_minichat_main_conf_t, redis_connect_timeout),
      &ngx_http_minichat_timeout_bounds },

    { ngx_string("minichat_redis_user"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_minichat_main_conf_t, redis_user),
      NULL },

    { ngx_string("minichat_redis_password_file"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_minichat_redis_password_file,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("minichat_redis_tls"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_minichat_main_conf_t, redis_tls),
      NULL },

    { ngx_string("minichat_redis_tls_verify"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_minichat_main_conf_t, redis_tls_verify),
      NULL },

    { ngx_string("minichat_redis_tls_ca_file"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_minichat_main_conf_t, redis_tls_ca_file),
      NULL },

    { ngx_string("minichat_redis_tls_certificate"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_minichat_main_conf_t, redis_tls_certificate),
      NULL },

    { ngx_string("minichat_redis_tls_certificate_key"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_minichat_main_conf_t, redis_tls_certificate_key),
      NULL },

    { ngx_string("minichat_redis_tls_name"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_minichat_main_conf_t, redis_tls_name),
      NULL },

    { ngx_string("minichat_session_ttl"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_minichat_main_conf_t, session_ttl),
      &ngx_http_minichat_session_ttl_bounds },

    { ngx_string("minichat_typing_interval"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_minichat_main_conf_t, typing_interval),
      &ngx_http_minichat_typing_bounds },

    { ngx_string("minichat_flush_window"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE123,
      ngx_http_minichat_flush_window,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("minichat_ping_interval"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_minichat_main_conf_t, ping_interval),
      &ngx_http_minichat_ping_bounds },

    { ngx_string("minichat_handshake_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_minichat_main_conf_t, handshake_timeout),
      &ngx_http_minichat_handshake_bounds },

    { ngx_string("minichat_limit_messages"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE12,
      ngx_http_minichat_limit_rate_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_minichat_main_conf_t, limit_messages),
      NULL },

    { ngx_string("minichat_limit_room_messages"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE12,
      ngx_http_minichat_limit_rate_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_minichat_main_conf_t, limit_room_messages),
      NULL },

    { ngx_string("minichat_limit_connections"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE12,
      ngx_http_minichat_limit_rate_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_minichat_main_conf_t, limit_connections),
      NULL },

    { ngx_string("minichat_limit_user_connections"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE12,
      ngx_http_minichat_limit_rate_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_minichat_main_conf_t, limit_user_connections),
      NULL },

    { ngx_string("minichat_limit_rest"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE12,
      ngx_http_minichat_limit_rate_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_minichat_main_conf_t, limit_rest),
      NULL },

    { ngx_string("minichat_limit_strikes"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE12,
      ngx_http_minichat_limit_strikes_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("minichat_limit_bans"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_http_minichat_limit_bans_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("minichat_limit_redis_down"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_enum_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_minichat_main_conf_t, limit_redis_down),
      &ngx_http_minichat_limit_redis_down },

    { ngx_string("minichat_max_connections_per_ip"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_minichat_ipcap_conf,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("minichat_max_connections_per_ip_zone"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_minichat_main_conf_t, ipcap_zone_size),
      &ngx_http_minichat_ipcap_zone_bounds },

    { ngx_string("minichat_ws"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_minichat_location,
      0,
      0,
      &ngx_http_minichat_ws_content },

    { ngx_string("minichat_ws_echo"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_minichat_location,
      0,
      0,
      &ngx_http_minichat_echo_content },

    { ngx_string("minichat_ws_echo_max_message_size"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_minichat_loc_conf_t, echo_max_message_size),
      &ngx_http_minichat_echo_max_message_bounds },

    { ngx_string("minichat_ws_deflate"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_minichat_loc_conf_t, deflate),
      NULL },

    { ngx_string("minichat_ws_deflate_threshold"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_minichat_loc_conf_t, deflate_threshold),
      NULL },

    { ngx_string("minichat_ws_deflate_level"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_minichat_loc_conf_t, deflate_level),
      &ngx_http_minichat_deflate_level_bounds },

    { ngx_string("minichat_ws_deflate_client_takeover"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_minichat_loc_conf_t, deflate_client_takeover),
      NULL },

    { ngx_string("minichat_metrics"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_minichat_location,
      0,
      0,
      &ngx_http_minichat_metrics_content },

    { ngx_string("minichat_status"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_minichat_location,
      0,
      0,
      &ngx_http_minichat_status_content },

    { ngx_string("minichat_ready"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_minichat_location,
      0,
      0,
      &ngx_http_minichat_ready_content },

    { ngx_string("minichat_api"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_minichat_location,
      0,
      0,
      &ngx_http_minichat_api_content },

    { ngx_string("minichat_server_api"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_minichat_server_api_conf,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("minichat_server_api_key_file"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_minichat_server_api_keys_conf,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_module_t ngx_http_minichat_module_ctx = {
    NULL,                                  /* preconfiguration */
    NULL,                                  /* postconfiguration */

    ngx_http_minichat_create_main_conf,    /* create main configuration */
    ngx_http_minichat_init_main_conf,      /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_minichat_create_loc_conf,     /* create location configuration */
    ngx_http_minichat_merge_loc_conf       /* merge location configuration */
};


ngx_module_t ngx_http_minichat_module = {
    NGX_MODULE_V1,
    &ngx_http_minichat_module_ctx,         /* module context */
    ngx_http_minichat_commands,            /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    ngx_http_minichat_init_process,        /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_minichat_exit_process,        /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static ngx_http_minichat_main_conf_t  *ngx_http_minichat_mcf;


static void *
ngx_http_minichat_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_minichat_main_conf_t  *mcf;

    mcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_minichat_main_conf_t));
    if (mcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     mcf->node = { 0, NULL };
     *     mcf->redis_host = { 0, NULL };
     *     mcf->relay_path = { 0, NULL };
     *     mcf->jwt_secret = { 0, NULL };
     *     mcf->jwt_issuer = { 0, NULL };
     *     mcf->jwt_audience = { 0, NULL };
     *     mcf->allowed_origins = NULL;
     *     mcf->ipcap_zone = NULL;
     *     mcf->metrics_zone = NULL;
     *     mcf->enabled = 0;
     *     mcf->redis_seeds = NULL;
     *     mcf->redis_user = { 0, NULL };
     *     mcf->redis_password = { 0, NULL };
     *     mcf->redis_tls_ca_file = { 0, NULL };
     *     mcf->redis_tls_certificate = { 0, NULL };
     *     mcf->redis_tls_certificate_key = { 0, NULL };
     *     mcf->redis_tls_name = { 0, NULL };
     *     mcf->redis_ssl = NULL;
     *     mcf->limit_args = NULL;
     */

    mcf->redis_port = NGX_CONF_UNSET;
    mcf->max_message_size = NGX_CONF_UNSET_SIZE;
    mcf->send_queue_size = NGX_CONF_UNSET_SIZE;
    mcf->log_max = NGX_CONF_UNSET_UINT;
    mcf->log_bytes = NGX_CONF_UNSET_SIZE;
    mcf->members_cache = NGX_CONF_UNSET_UINT;
    mcf->history_read_ahead = NGX_CONF_UNSET;
    mcf->idem_ttl = NGX_CONF_UNSET;
    mcf->reconnect = NGX_CONF_UNSET_MSEC;
    mcf->relay_timeout = NGX_CONF_UNSET_MSEC;
    mcf->repair_after = NGX_CONF_UNSET_MSEC;
    mcf->ping_interval = NGX_CONF_UNSET_MSEC;
    mcf->handshake_timeout = NGX_CONF_UNSET_MSEC;
    mcf->redis_timeout = NGX_CONF_UNSET_MSEC;
    mcf->redis_connect_timeout = NGX_CONF_UNSET_MSEC;
    mcf->redis_tls = NGX_CONF_UNSET;
    mcf->redis_tls_verify = NGX_CONF_UNSET;
    mcf->session_ttl = NGX_CONF_UNSET_MSEC;
    mcf->typing_interval = NGX_CONF_UNSET_MSEC;
    mcf->flush_window = NGX_CONF_UNSET_MSEC;
    mcf->flush_busy = NGX_CONF_UNSET_UINT;
    mcf->flush_rate = NGX_CONF_UNSET_UINT;

    mcf->limit_messages.burst = NGX_CONF_UNSET_UINT;
    mcf->limit_room_messages.burst = NGX_CONF_UNSET_UINT;
    mcf->limit_connections.burst = NGX_CONF_UNSET_UINT;
    mcf->limit_user_connections.burst = NGX_CONF_UNSET_UINT;
    mcf->limit_rest.burst = NGX_CONF_UNSET_UINT;
    mcf->strike_refusals = NGX_CONF_UNSET_UINT;
    mcf->strike_window = NGX_CONF_UNSET_MSEC;
    mcf->bans = NGX_CONF_UNSET_PTR;
    mcf->limit_redis_down = NGX_CONF_UNSET_UINT;
    mcf->ipcap_max = NGX_CONF_UNSET_UINT;
    mcf->ipcap_zone_size = NGX_CONF_UNSET_SIZE;

    return mcf;
}


static char *
ngx_http_minichat_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_http_minichat_main_conf_t *mcf = conf;

    ngx_uint_t  i;
    u_char      ch;

    ngx_conf_init_size_value(mcf->max_message_size, 64 * 1024);
    ngx_conf_init_size_value(mcf->send_queue_size, 1024 * 1024);
    ngx_conf_init_uint_value(mcf->log_max, 1000);
    ngx_conf_init_size_value(mcf->log_bytes, 1024 * 1024);
    ngx_conf_init_uint_value(mcf->members_cache, 1024);
    ngx_conf_init_value(mcf->history_read_ahead, 1);
    ngx_conf_init_value(mcf->idem_ttl, 86400);
    ngx_conf_init_msec_value(mcf->reconnect, 500);
    ngx_conf_init_msec_value(mcf->relay_timeout, 5000);
    ngx_conf_init_msec_value(mcf->repair_after, 15000);
    ngx_conf_init_msec_value(mcf->ping_interval, 30000);
    ngx_conf_init_msec_value(mcf->handshake_timeout, 10000);
    ngx_conf_init_msec_value(mcf->redis_timeout, 5000);
    ngx_conf_init_msec_value(mcf->redis_connect_timeout, 1000);

    if (mcf->redis_user.len && mcf->redis_password.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"minichat_redis_user\" needs \"minichat_redis_password_file\"");
        return NGX_CONF_ERROR;
    }

    if (ngx_http_minichat_redis_tls_merge(cf, mcf) != NGX_CONF_OK) {
        return NGX_CONF_ERROR;
    }

    ngx_conf_init_msec_value(mcf->session_ttl, 60000);
    ngx_conf_init_msec_value(mcf->typing_interval, 2000);
    ngx_conf_init_msec_value(mcf->flush_window, 0);
    ngx_conf_init_uint_value(mcf->flush_busy, NGX_HTTP_MINICHAT_FLUSH_BUSY);
    ngx_conf_init_uint_value(mcf->flush_rate, NGX_HTTP_MINICHAT_FLUSH_RATE);

    if (ngx_http_minichat_limit_merge(cf, mcf) != NGX_CONF_OK) {
        return NGX_CONF_ERROR;
    }

    if (ngx_http_minichat_ipcap_merge(cf, mcf) != NGX_CONF_OK) {
        return NGX_CONF_ERROR;
    }

    if (ngx_http_minichat_metrics_merge(cf, mcf) != NGX_CONF_OK) {
        return NGX_CONF_ERROR;
    }

    /* each value's own range is checked as it is read (the bounds tables
     * above); what follows relates one directive to another */

    if (mcf->redis_connect_timeout > mcf->redis_timeout) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"minichat_redis_connect_timeout\" must not be longer than \"minichat_redis_timeout\"");
        return NGX_CONF_ERROR;
    }

    if (mcf->ping_interval && mcf->session_ttl < 2 * mcf->ping_interval) {
        /* sessions are refreshed on the ping tick */
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"minichat_session_ttl\" must be at least twice \"minichat_ping_interval\"");
        return NGX_CONF_ERROR;
    }

    if (mcf->node.len == 0) {
        ngx_str_set(&mcf->node, "local");
    }

    if (mcf->node.len > 63) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "\"minichat_node\" is longer than 63 characters");
        return NGX_CONF_ERROR;
    }

    for (i = 0; i < mcf->node.len; i++) {
        ch = mcf->node.data[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9')
              || ch == '.' || ch == '_' || ch == '-'))
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid \"minichat_node\" \"%V\": use letters, digits, \".\", \"_\", \"-\"",
                               &mcf->node);
            return NGX_CONF_ERROR;
        }
    }

    if (mcf->enabled && mcf->jwt_secret.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"minichat_jwt_secret\" or \"minichat_jwt_secret_file\" "
                           "is required with \"minichat_redis\" or \"minichat_redis_cluster\"");
        return NGX_CONF_ERROR;
    }

    if (mcf->enabled && mcf->jwt_secret.len < 16) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "the JWT secret must be at least 16 bytes long");
        return NGX_CONF_ERROR;
    }

    /* (a message must fit a relay frame, 4 MiB, with room to spare, or it
     * would be given a seq that can never be persisted: its bound is 1m) */

    if (mcf->send_queue_size < 2 * mcf->max_message_size) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"minichat_send_queue_size\" must be at least twice "
                           "\"minichat_max_message_size\"");
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static void *
ngx_http_minichat_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_minichat_loc_conf_t  *lcf;

    lcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_minichat_loc_conf_t));
    if (lcf == NULL) {
        return NULL;
    }

    lcf->echo_max_message_size = NGX_CONF_UNSET_SIZE;
    lcf->deflate = NGX_CONF_UNSET;
    lcf->deflate_threshold = NGX_CONF_UNSET_SIZE;
    lcf->deflate_level = NGX_CONF_UNSET_UINT;
    lcf->deflate_client_takeover = NGX_CONF_UNSET;
    lcf->server_api_keys = NGX_CONF_UNSET_PTR;

    return lcf;
}


static char *
ngx_http_minichat_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_minichat_loc_conf_t *prev = parent;
    ngx_http_minichat_loc_conf_t *conf = child;

    ngx_http_minichat_main_conf_t  *mcf;

    /* the main conf is complete (init_main_conf runs before merging):
     * an echo takes the chat's limit unless told otherwise */
    mcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_minichat_module);

    ngx_conf_merge_size_value(conf->echo_max_message_size, prev->echo_max_message_size, mcf->max_message_size);

    ngx_conf_merge_value(conf->deflate, prev->deflate, 0);
    ngx_conf_merge_size_value(conf->deflate_threshold, prev->deflate_threshold, 256);
    ngx_conf_merge_uint_value(conf->deflate_level, prev->deflate_level, 6);
    ngx_conf_merge_value(conf->deflate_client_takeover, prev->deflate_client_takeover, 1);

    if (conf->deflate_threshold > 64 * 1024 * 1024) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "\"minichat_ws_deflate_threshold\" must be at most 64m");
        return NGX_CONF_ERROR;
    }

    return ngx_http_minichat_server_api_merge(cf, prev, conf);
}


/* minichat_redis host:port */
static char *
ngx_http_minichat_redis(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_minichat_main_conf_t *mcf = conf;

    ngx_str_t  *value;
    ngx_url_t   u;

    if (mcf->enabled) {
        return "is duplicate";
    }

    value = cf->args->elts;

    ngx_memzero(&u, sizeof(ngx_url_t));
    u.url = value[1];

    /* resolved here, once: a name would need getaddrinfo(), blocking the
     * worker, on every reconnect */
    if (ngx_parse_url(cf->pool, &u) != NGX_OK || u.no_port || u.family == AF_UNIX || u.naddrs == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid redis address \"%V\", expected host:port%s%s",
                           &value[1], u.err ? ": " : "", u.err ? u.err : "");
        return NGX_CONF_ERROR;
    }

    mcf->redis_host.data = ngx_pnalloc(cf->pool, NGX_SOCKADDR_STRLEN + 1);
    if (mcf->redis_host.data == NULL) {
        return NGX_CONF_ERROR;
    }
    mcf->redis_host.len = ngx_sock_ntop(u.addrs[0].sockaddr, u.addrs[0].socklen,
                                        mcf->redis_host.data, NGX_SOCKADDR_STRLEN, 0);
    mcf->redis_host.data[mcf->redis_host.len] = '\0';
    mcf->redis_port = u.port;
    mcf->enabled = 1;

    return NGX_CONF_OK;
}


/* minichat_relay unix:/path/to/relay.sock */
static char *
ngx_http_minichat_relay(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_minichat_main_conf_t *mcf = conf;

    ngx_str_t  *value, path;

    if (mcf->relay_path.data) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (value[1].len <= 5 || ngx_strncmp(value[1].data, "unix:", 5) != 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid relay address \"%V\", expected unix:/path",
                           &value[1]);
        return NGX_CONF_ERROR;
    }

    path.len = value[1].len - 5;
    if (path.len >= sizeof(((struct sockaddr_un *) 0)->sun_path)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "relay socket path \"%V\" is too long", &value[1]);
        return NGX_CONF_ERROR;
    }

    path.data = ngx_pnalloc(cf->pool, path.len + 1);
    if (path.data == NULL) {
        return NGX_CONF_ERROR;
    }
    ngx_memcpy(path.data, value[1].data + 5, path.len);
    path.data[path.len] = '\0';

    mcf->relay_path = path;

    return NGX_CONF_OK;
}


/* Reads a secret from the file named by the directive's argument into out:
 * the whole file with trailing whitespace removed (a key written by `echo`
 * works), or only its first line (first_line).  what names it in errors. */
static char *
ngx_http_minichat_read_secret(ngx_conf_t *cf, const char *what, ngx_uint_t first_line, ngx_str_t *out)
{
    ngx_str_t   *value, name;
    ngx_file_t   file;
    ssize_t      n;
    u_char      *buf, *nl;

    if (out->data) {
        return "is duplicate";
    }

    value = cf->args->elts;
    name = value[1];

    if (ngx_conf_full_name(cf->cycle, &name, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(&file, sizeof(ngx_file_t));
    file.name = name;
    file.log = cf->log;

    file.fd = ngx_open_file(name.data, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);
    if (file.fd == NGX_INVALID_FILE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           ngx_open_file_n " \"%V\" failed", &name);
        return NGX_CONF_ERROR;
    }

    buf = ngx_pnalloc(cf->pool, 1025);
    if (buf == NULL) {
        ngx_close_file(file.fd);
        return NGX_CONF_ERROR;
    }

    n = ngx_read_file(&file, buf, 1025, 0);
    ngx_close_file(file.fd);

    if (n == NGX_ERROR) {
        return NGX_CONF_ERROR;
    }

    if (first_line) {
        nl = ngx_strlchr(buf, buf + n, '\n');
        if (nl) {
            n = nl - buf;
        }
        if (n > 0 && buf[n - 1] == '\r') {
            n--;
        }

    } else if (n <= 1023) {
        while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'
                         || buf[n - 1] == ' ' || buf[n - 1] == '\t'))
        {
            n--;
        }
    }

    if (n == 0 || n > 1023) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "%s file \"%V\" must hold 1..1023 bytes", what, &name);
        return NGX_CONF_ERROR;
    }

    buf[n] = '\0';
    out->data = buf;
    out->len = n;

    return NGX_CONF_OK;
}


/* minichat_jwt_secret_file path: the secret is the file's content, with
 * trailing whitespace removed */
static char *
ngx_http_minichat_secret_file(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_minichat_main_conf_t *mcf = conf;

    return ngx_http_minichat_read_secret(cf, "JWT secret", 0, &mcf->jwt_secret);
}


/* minichat_redis_password_file path: the password is the file's first line
 * (a trailing newline is not part of it), sent with AUTH on every connect */
static char *
ngx_http_minichat_redis_password_file(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_minichat_main_conf_t *mcf = conf;

    return ngx_http_minichat_read_secret(cf, "redis password", 1, &mcf->redis_password);
}


/* minichat_allowed_origins pattern ...: the origins a browser may open a
 * chat WebSocket from (lib/src/origin.c) */
static char *
ngx_http_minichat_allowed_origins(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_minichat_main_conf_t *mcf = conf;

    ngx_str_t   *value, *o;
    ngx_uint_t   i;
    const char  *err;

    if (mcf->allowed_origins) {
        return "is duplicate";
    }

    value = cf->args->elts;

    mcf->allowed_origins = ngx_array_create(cf->pool, cf->args->nelts - 1, sizeof(ngx_str_t));
    if (mcf->allowed_origins == NULL) {
        return NGX_CONF_ERROR;
    }

    for (i = 1; i < cf->args->nelts; i++) {
        err = mc_origin_check_pattern((const char *) value[i].data, value[i].len);
        if (err) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid origin \"%V\" in \"minichat_allowed_origins\": %s "
                               "(expected scheme://host[:port], the host may start with \"*.\")", &value[i], err);
            return NGX_CONF_ERROR;
        }

        o = ngx_array_push(mcf->allowed_origins);
        if (o == NULL) {
            return NGX_CONF_ERROR;
        }
        *o = value[i];
    }

    return NGX_CONF_OK;
}


/* A location directive without arguments (minichat_ws, minichat_api,
 * ...): the location's content handler is the one its command's post field
 * points to. */
static char *
ngx_http_minichat_location(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = *(ngx_http_handler_pt *) cmd->post;

    return NGX_CONF_OK;
}


ngx_http_minichat_main_conf_t *
ngx_http_minichat_conf(void)
{
    return ngx_http_minichat_mcf;
}


uint64_t
ngx_http_minichat_now_ms(void)
{
    ngx_time_t  *tp;

    tp = ngx_timeofday();

    return (uint64_t) tp->sec * 1000 + tp->msec;
}


static ngx_int_t
ngx_http_minichat_init_process(ngx_cycle_t *cycle)
{
    ngx_http_minichat_main_conf_t  *mcf;

    if (ngx_process != NGX_PROCESS_WORKER && ngx_process != NGX_PROCESS_SINGLE) {
        return NGX_OK;
    }

    mcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_minichat_module);

    /* taken from this cycle only: a failed reload leaves no stale pointer */
    ngx_http_minichat_mcf = mcf;

    /* echo locations count too */
    ngx_http_minichat_metrics_init(mcf);

    if (mcf == NULL || !mcf->enabled) {
        return NGX_OK;
    }

    ngx_http_minichat_registry_init();
    ngx_http_minichat_users_init(cycle);

    if (ngx_http_minichat_auth_init(cycle) != NGX_OK) {
        return NGX_ERROR;
    }

    if (ngx_http_minichat_redis_init(cycle) != NGX_OK) {
        return NGX_ERROR;
    }

    if (mcf->relay_path.len && ngx_http_minichat_relay_init(cycle) != NGX_OK) {
        return NGX_ERROR;
    }

    ngx_http_minichat_presence_init(cycle);
    ngx_http_minichat_durable_init(cycle);

    return NGX_OK;
}


static void
ngx_http_minichat_exit_process(ngx_cycle_t *cycle)
{
    /* what is still listed for this turn's write goes first */
    ngx_http_minichat_flush_exit();

    /* echo locations compress without the rest of the module */
    ngx_http_minichat_deflate_exit();
    ngx_http_minichat_conn_exit();

    if (ngx_http_minichat_mcf == NULL || !ngx_http_minichat_mcf->enabled) {
        return;
    }

    ngx_http_minichat_presence_exit();
    ngx_http_minichat_durable_exit();
    ngx_http_minichat_members_exit();
    ngx_http_minichat_defer_flush();
    ngx_http_minichat_users_exit();
    ngx_http_minichat_relay_exit();
    ngx_http_minichat_redis_exit();
    ngx_http_minichat_auth_exit();
}
