//! The request head as it goes upstream (`upstream_request_filter`): the bound credential
//! checked again, the head rewritten for the route (see `rewrite`), the Messages API's path and
//! headers (see `unified::messages`), an AWS key's signature over the final head and body, the
//! trace context and the request id.

use pingora::http::RequestHeader;
use pingora::{Error, ErrorType};

use super::ctx::Bound;
use super::respond::ErrorReply;
use super::{rewrite, unified, RequestCtx};
use crate::aws::BEDROCK_SERVICE;

/// Makes `upstream_request` what is sent for the request's current attempt; on a failure the
/// reply the client gets is left in `ctx.reply`.
pub(super) fn prepare(
    upstream_request: &mut RequestHeader,
    ctx: &mut RequestCtx,
) -> pingora::Result<()> {
    let (Some(route), Some(binding)) = (&ctx.route, ctx.bound.as_ref().map(Bound::binding)) else {
        return Err(Error::new(ErrorType::InternalError));
    };
    ctx.body_replaced = false;
    // A minted token that expired since the request was bound (or a retry's deployment
    // whose token is not minted): fail closed, naming the credential and the cause.
    if let Err(unavailable) = binding.credential.usable() {
        ctx.reply = Some(ErrorReply::credential_unavailable(unavailable.to_string()));
        return Err(Error::new(ErrorType::InternalError));
    }
    let replacement_len = ctx.replacement_body().map(|b| b.len());
    rewrite::rewrite_request(upstream_request, route, binding, replacement_len).map_err(
        |message| {
            ctx.reply = Some(ErrorReply::new(500, "rewrite_failed", message));
            Error::new(ErrorType::InternalError)
        },
    )?;
    unified::messages::on_upstream_request(ctx, upstream_request)?;
    // AWS keys: signed now that the path, `Host` and body sent are final.
    if let Some(aws) = &binding.credential.aws {
        let body = ctx.replacement_body().map_or(&[][..], |b| &b[..]);
        let name = &binding.credential.name;
        if let Err(unavailable) = aws.sign(name, upstream_request, body, BEDROCK_SERVICE) {
            ctx.reply = Some(ErrorReply::credential_unavailable(unavailable.to_string()));
            return Err(Error::new(ErrorType::InternalError));
        }
    }
    if let Some(span) = &ctx.span {
        span.inject(upstream_request)?;
    }
    ctx.request_id.forward(upstream_request)
}
