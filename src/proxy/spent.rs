//! The end of a request that presented a LiteLLM key and reached a provider: what it spent,
//! handed to the spend tracker (`spend::tracker`), which prices it and queues it for LiteLLM's
//! tables. A request the sidecar refused (a key check, a limit) never reached a provider and
//! writes nothing, as LiteLLM writes nothing for a request its auth refused.

use pingora::proxy::Session;

use super::RequestCtx;
use crate::config::Backend;
use crate::spend::tracker::{DeploymentRef, Finished, SpendTracker};

/// Records `ctx`'s spend with `spend`, when the request had a key and reached a provider.
pub(super) fn record(spend: &SpendTracker, session: &Session, ctx: &RequestCtx) {
    let (Some(key), Some(upstream_started)) = (ctx.litellm_key.as_ref(), ctx.upstream_started)
    else {
        return;
    };
    let status = session.response_written().map_or(0, |r| r.status.as_u16());
    let answered = ctx.upstream_ttfb.is_some() && ctx.reply.is_none();
    let deployment = ctx.deployment();
    let alias = match ctx.model_request() {
        Some(request) => Some(request.alias.as_str()),
        None => ctx.route.as_ref().and_then(|r| match &r.backend {
            Backend::Model(alias) if ctx.binding().is_some() => Some(alias.as_str()),
            _ => None,
        }),
    };
    let path = session.req_header().uri.path();
    let endpoint = ctx
        .route
        .as_ref()
        .map_or(path, |r| r.path_after_prefix(path));
    spend.record(&Finished {
        request_id: ctx.request_id.as_str(),
        key: (&key.digest, key.user_id.as_ref(), key.team_id_shared()),
        deployment: deployment.map(|d| DeploymentRef {
            id: &d.id,
            provider: &d.provider,
            model: &d.model,
            api_base: d.upstream_text.as_deref(),
            pricing: &d.pricing,
            names: &d.spend_names,
        }),
        alias,
        end_user: ctx.model_request().and_then(|r| r.end_user()),
        endpoint,
        usage: ctx.answer_usage,
        answered_by: ctx.answered_by.as_deref(),
        elapsed: ctx.started.elapsed(),
        first_byte: ctx
            .upstream_ttfb
            .map(|ttfb| upstream_started.duration_since(ctx.started) + ttfb),
        success: answered && (200..300).contains(&status),
    });
}
