/**
 * The fixed set of reasons a forwarding fails for, as metric label values.
 * A control reply's reason may carry text from a VNC server (`VNC server
 * refused: <its reason>`); a label must never: every reason maps to one of
 * a fixed list, and anything unforeseen to `other`.
 *
 * @module
 */

/** Reply reasons by their fixed prefix, in matching order. */
const REASON_PREFIXES = [
  ["authentication failed", "authentication_failed"],
  ["malformed request", "malformed_request"],
  ["unsupported console type", "unsupported_console_type"],
  ["no free ports", "no_free_ports"],
  ["source port in use", "source_port_in_use"],
  ["cannot listen on the forwarded port", "cannot_listen"],
  ["cannot connect to VNC server", "cannot_connect"],
  ["VNC server refused", "vnc_server_refused"],
  ["VNC server requires authentication", "vnc_server_requires_authentication"],
  ["VNC server timed out", "vnc_server_timed_out"],
  ["VNC server closed the connection", "vnc_server_closed"],
  ["VNC server sent an invalid handshake", "vnc_server_invalid_handshake"],
  ["VNC server handshake failed", "vnc_server_handshake_failed"],
  ["backend not allowed", "backend_not_allowed"],
  ["VNC server requires TLS", "vnc_server_requires_tls"],
  ["VNC server does not offer TLS", "vnc_server_no_tls"],
  ["VNC server offers only anonymous TLS", "vnc_server_anonymous_tls"],
  ["VNC server VeNCrypt version not supported", "vnc_server_vencrypt_version"],
  ["VNC server certificate not trusted", "vnc_server_certificate_not_trusted"],
  ["VNC server certificate does not match the name", "vnc_server_certificate_name"],
  ["VNC server TLS handshake failed", "vnc_server_tls_failed"],
  ["TLS is not configured", "tls_not_configured"],
  ["gateway is not configured", "gateway_not_configured"],
  ["token store unavailable", "token_store_unavailable"],
  ["request timed out", "request_timed_out"],
  ["server busy", "server_busy"],
  ["too many sessions for this user", "limit_sessions_per_user"],
  ["too many sessions for this VNC server", "limit_sessions_per_backend"],
  ["too many sessions", "limit_sessions"],
  ["too many requests", "rate_limited"],
  ["idle_timeout above the daemon's limit", "limit_idle_timeout"],
  ["max_session_time above the daemon's limit", "limit_max_session_time"],
  ["The password is the same VNC key", "password_collision"],
  ["internal error", "internal_error"],
] as const;

/** A failure reason's label value. */
export type FailureReason = (typeof REASON_PREFIXES)[number][1] | "other";

/** Every label value, `other` last. */
export const FAILURE_REASONS: readonly FailureReason[] = [
  ...REASON_PREFIXES.map(([, label]) => label),
  "other",
];

/** The label value of a reply's reason: one of {@linkcode FAILURE_REASONS}. */
export function failureReason(reason: string): FailureReason {
  for (const [prefix, label] of REASON_PREFIXES) {
    if (reason === prefix || reason.startsWith(`${prefix}:`) || reason.startsWith(`${prefix} `)) {
      return label;
    }
  }
  return "other";
}
