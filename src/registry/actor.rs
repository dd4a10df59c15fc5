//! How the audit trail names the actor of a request made with an API token.

/// The audit trail's actor for a request made with an API token: its user and the token,
/// `nina (token:tok_…)`. `GET /audit?user=nina` finds these lines as well as nina's own.
pub fn token_actor(user: &str, token_id: &str) -> String {
    format!("{user}{TOKEN_ACTOR_INFIX}{token_id})")
}

/// What follows the username in [`token_actor`], up to the token's id.
pub(super) const TOKEN_ACTOR_INFIX: &str = " (token:";
