//! `model:` routes: the route names the alias, so the route, not the request, decides the model
//! the provider runs. Every place a request can name a model is set to the bound deployment's
//! model before it is sent: the JSON body's top-level `model` (replaced in place, as on
//! `dispatch: model` routes), a model in the path (`…/models/{model}:{method}` as Gemini and
//! Vertex name it, `…/deployments/{name}/…` as Azure does, `…/model/{id}/…` as Bedrock does)
//! and a `model` query parameter (OpenAI's realtime API, `?model=`).
//!
//! Rewriting rather than refusing: it is what LiteLLM does (the provider always receives the
//! deployment's model, never the client's string), an SDK must send some `model` and a client of
//! a route bound to one alias need not know the provider's name for it, and an alias with
//! deployments on several providers works whichever one a request is bound to. A body the sidecar
//! cannot read as JSON (multipart uploads, JSON Lines files for batches), or JSON without `model`
//! on a path that names none (a batch, an assistant's run: objects at the provider with a model of
//! their own), could reach a model it cannot see: with a LiteLLM key limited to models it is
//! refused (401), without one it is forwarded unchanged.

use std::borrow::Cow;

use bytes::Bytes;
use pingora::proxy::Session;

use super::respond::ErrorReply;
use super::unified::body::{model_in, replace_model, BodyModel, ClientBody};
use super::unified::read_body;
use super::RequestCtx;
use crate::credentials::models::Deployment;
use crate::router::Binding;

/// Path segments after which the next segment names a model.
const MODEL_SEGMENTS: [&str; 4] = ["models", "tunedModels", "deployments", "model"];

/// Of those, the ones whose model segment may end in Google's `:method`.
const METHOD_SUFFIXED: [&str; 2] = ["models", "tunedModels"];

/// `request_filter`, once bound: on a `model:` route (a binding with a deployment), reads the
/// body (bounded by `limits.max_request_body_bytes`) and keeps, for `request_body_filter` to
/// send, the body with its `model` set to the deployment's; then, with a LiteLLM key, the
/// request counts against the key's rate limit (a refused request does not count). Other
/// bindings are returned as they are.
pub async fn pin_body(
    session: &mut Session,
    ctx: &mut RequestCtx,
    binding: Binding,
) -> Result<Binding, ErrorReply> {
    let Some(deployment) = binding.model.as_deref() else {
        return Ok(binding);
    };
    if !session.as_mut().is_body_empty() {
        let body = read_body(session, ctx.limits.max_request_body_bytes).await?;
        let path_names_model = names_model(session.req_header().uri.path());
        ctx.pinned_body = Some(pinned(body, deployment, path_names_model, ctx)?);
    }
    if let Some(key) = &ctx.litellm_key {
        key.take_request().map_err(ErrorReply::litellm)?;
    }
    Ok(binding)
}

/// The body to send instead of `body`. For a key limited to models, a body whose model the
/// sidecar cannot see is refused: one that is not JSON, or JSON without `model` on a path that
/// names no model either (`/batches` with an `input_file_id`, `/threads/…/runs` with an
/// `assistant_id`: objects at the provider that name a model of their own).
fn pinned(
    body: ClientBody,
    deployment: &Deployment,
    path_names_model: bool,
    ctx: &RequestCtx,
) -> Result<Bytes, ErrorReply> {
    if body.is_empty() {
        return Ok(body.freeze());
    }
    let limited = ctx.litellm_key.as_ref().filter(|k| k.limited_to_models());
    match model_in(body.as_bytes())? {
        BodyModel::Named(field) => {
            Ok(replace_model(body, &field, &deployment.model, &deployment.model_json).0)
        }
        BodyModel::Unnamed => match limited {
            Some(key) if !path_names_model => Err(ErrorReply::litellm(
                key.refuse_unseen_model("a body without \"model\" on a path without one"),
            )),
            _ => Ok(body.freeze()),
        },
        BodyModel::NotJson(_) => match limited {
            Some(key) => Err(ErrorReply::litellm(
                key.refuse_unseen_model("a body that is not a JSON object"),
            )),
            None => Ok(body.freeze()),
        },
    }
}

/// Whether `path` names a model (see the module docs).
fn names_model(path: &str) -> bool {
    let mut segments = path.split('/').peekable();
    while let Some(segment) = segments.next() {
        let next = segments.peek().is_some_and(|s| !s.is_empty());
        if next && MODEL_SEGMENTS.contains(&segment) {
            return true;
        }
    }
    false
}

/// `path` with the model it names, if any, replaced by `model` (see the module docs).
pub fn pin_path<'a>(path: &'a str, model: &str) -> Cow<'a, str> {
    if !names_model(path) {
        return Cow::Borrowed(path);
    }
    let segments: Vec<&str> = path.split('/').collect();
    let mut out = Vec::with_capacity(segments.len());
    let mut marker: Option<&str> = None;
    for segment in segments {
        if let Some(before) = marker.filter(|_| !segment.is_empty()) {
            let method = match segment.find(':') {
                Some(i) if METHOD_SUFFIXED.contains(&before) => &segment[i..],
                _ => "",
            };
            out.push(Cow::Owned(format!(
                "{}{method}",
                crate::percent::encode(model)
            )));
            marker = None;
            continue;
        }
        marker = MODEL_SEGMENTS.iter().find(|m| **m == segment).copied();
        out.push(Cow::Borrowed(segment));
    }
    Cow::Owned(out.join("/"))
}

/// `query` with the value of every `model` parameter (its name in any case or percent-encoding)
/// replaced by `model`.
pub fn pin_query(query: Option<String>, model: &str) -> Option<String> {
    let query = query?;
    let names_model = |pair: &str| {
        let name = pair.split('=').next().unwrap_or("");
        crate::percent::decode(name)
            .trim()
            .eq_ignore_ascii_case("model")
    };
    if !query.split('&').any(names_model) {
        return Some(query);
    }
    let pinned = format!("model={}", crate::percent::encode(model));
    let pairs: Vec<&str> = query
        .split('&')
        .map(|pair| {
            if names_model(pair) {
                pinned.as_str()
            } else {
                pair
            }
        })
        .collect();
    Some(pairs.join("&"))
}

#[cfg(test)]
mod tests {
    use super::{pin_path, pin_query};

    #[test]
    fn a_model_named_in_the_query_is_replaced() {
        let pinned = |q: &str| pin_query(Some(q.to_string()), "flash");
        assert_eq!(pinned("model=big&x=1"), Some("model=flash&x=1".into()));
        assert_eq!(pinned("x=1&%4Dodel=big"), Some("x=1&model=flash".into()));
        assert_eq!(pinned("models=big"), Some("models=big".into()));
        assert_eq!(pin_query(None, "flash"), None);
    }

    #[test]
    fn a_model_named_in_the_path_is_replaced() {
        let cases = [
            (
                "/v1beta/models/gemini-ultra:generateContent",
                "/v1beta/models/flash:generateContent",
            ),
            (
                "/v1/projects/p/locations/l/publishers/google/models/big:streamGenerateContent",
                "/v1/projects/p/locations/l/publishers/google/models/flash:streamGenerateContent",
            ),
            (
                "/openai/deployments/expensive/chat/completions",
                "/openai/deployments/flash/chat/completions",
            ),
            ("/model/anthropic.opus-v1:0/invoke", "/model/flash/invoke"),
            (
                "/v1beta/tunedModels/x:generateContent",
                "/v1beta/tunedModels/flash:generateContent",
            ),
            ("/v1/chat/completions", "/v1/chat/completions"),
            ("/v1/models", "/v1/models"),
            ("/v1/models/", "/v1/models/"),
        ];
        for (path, want) in cases {
            assert_eq!(pin_path(path, "flash"), want, "{path}");
        }
        assert_eq!(
            pin_path("/models/a/models/b:x", "m/n"),
            "/models/m%2Fn/models/m%2Fn:x"
        );
    }
}
