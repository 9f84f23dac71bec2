//! The end of `request_filter`: an admitted request bound to what serves it. A route's binding
//! (with a `model:` route's deployment pinned in the body, see `pinned`), or on a
//! `dispatch: model` route the deployment the body names (see `unified`); then, for a minted
//! credential, its token waited for.

use pingora::proxy::Session;

use super::admission::Admitted;
use super::ctx::Bound;
use super::respond::ErrorReply;
use super::unified::ServedOrBound;
use super::{pinned, unified, RequestCtx};
use crate::config::RouterSettings;
use crate::router::Router;

/// Binds an admitted request: what serves it, once its minted token (if any) is held; `None`
/// when the request was answered here (`GET /models` on a `dispatch: model` route), or the
/// error to answer with. `settings` are the router settings in force for the request.
pub(super) async fn bind(
    session: &mut Session,
    ctx: &mut RequestCtx,
    admitted: Admitted,
    router: &Router,
    settings: RouterSettings,
) -> Result<Option<Bound>, ErrorReply> {
    let bound = match admitted {
        Admitted::Bound(binding) => Bound::Route(pinned::pin_body(session, ctx, binding).await?),
        // A `dispatch: model` route: the body names the deployment.
        Admitted::FromBody(snapshot) => {
            match unified::bind_by_body(session, ctx, snapshot, router, settings).await? {
                ServedOrBound::Bound(request) => Bound::Model(request),
                ServedOrBound::Answered => return Ok(None),
            }
        }
    };
    minted_token_ready(bound).await.map(Some)
}

/// Waits until a bound request's minted token is held (one mint however many requests wait;
/// see [`crate::minted`]), or answers 503 `credential_unavailable` naming the credential and
/// the cause. A credential with a key passes at once.
async fn minted_token_ready(bound: Bound) -> Result<Bound, ErrorReply> {
    let Some(minted) = bound.binding().credential.minted.clone() else {
        return Ok(bound);
    };
    match minted.ready().await {
        Ok(()) => Ok(bound),
        Err(unavailable) => Err(ErrorReply::credential_unavailable(unavailable.to_string())),
    }
}
