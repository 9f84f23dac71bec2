//! STS `AssumeRole` for LiteLLM's `aws_role_name`: the row's keys assume the role, and the
//! temporary keys STS answers with sign Bedrock requests until they are renewed. The minted cache
//! ([`crate::minted`]) holds them: one call however many requests wait, renewal in the last
//! quarter of their life (at most 5 minutes ahead) off the request path, the current keys used
//! while STS fails, then 503 `credential_unavailable` naming the credential and the cause.
//!
//! The call is STS's query API, as boto3 makes it: a form POST (`Action=AssumeRole`,
//! `Version=2011-06-15`, `RoleArn`, `RoleSessionName`, `DurationSeconds=3600`, `ExternalId` when
//! set) signed with SigV4 for service `sts` in the row's region, to `aws_sts_endpoint`, else
//! `AWS_ENDPOINT_URL_STS` (as AWS's SDKs read it), else `https://sts.{region}.amazonaws.com`.
//! The XML answer's `Credentials` are read; a refusal is reduced to its status and error code.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, ACCEPT, AUTHORIZATION};
use sha2::{Digest, Sha256};

use super::sigv4::{self, Keys};
use crate::minted::token_client::{post_form, token_url, MintError};
use crate::minted::{shared, Issued, Mint, Minted, MintedCredential};
use crate::percent;
use crate::secret::Secret;

/// The environment variable naming the STS endpoint when a row names none (AWS's SDKs read it).
pub const STS_ENDPOINT_ENV: &str = "AWS_ENDPOINT_URL_STS";
/// How long assumed keys are asked to live (LiteLLM asks for the same).
pub const DURATION_SECONDS: u64 = 3600;
/// The most of an answer's `Expiration` that is believed (a later one is read as this).
const MAX_LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// One role to assume, and the keys that assume it.
pub struct AssumeRole {
    /// `aws_role_name`: the role's ARN.
    pub role_arn: String,
    /// `aws_session_name`; else `sidecar-session-{unix time}` at each call, as LiteLLM names it.
    pub session_name: Option<String>,
    /// `aws_external_id`.
    pub external_id: Option<String>,
    /// `aws_sts_endpoint`.
    pub endpoint: Option<String>,
    /// `aws_region_name`: STS is signed for it (and its regional endpoint is the default).
    pub region: String,
    /// The row's keys.
    pub keys: Keys,
}

/// The grant: [`AssumeRole`] against its endpoint.
struct AssumeRoleGrant {
    role: AssumeRole,
    url: crate::config::UpstreamUrl,
}

/// The minted credential named `name` that assumes `role` (shared with a live one for the same
/// role and keys, so a reload does not assume it again). Errors name fields, never values.
pub fn minted(name: &str, role: AssumeRole) -> Result<Arc<MintedCredential>, String> {
    let endpoint = match &role.endpoint {
        Some(endpoint) => endpoint.clone(),
        None => std::env::var(STS_ENDPOINT_ENV)
            .ok()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| format!("https://sts.{}.amazonaws.com", role.region)),
    };
    let url = token_url(&endpoint).map_err(|e| format!("aws_sts_endpoint: {e}"))?;
    let mut print = Sha256::new();
    for part in [
        "sts",
        &endpoint,
        &role.role_arn,
        role.session_name.as_deref().unwrap_or(""),
        role.external_id.as_deref().unwrap_or(""),
        &role.region,
    ] {
        print.update((part.len() as u64).to_be_bytes());
        print.update(part.as_bytes());
    }
    role.keys.digest_into(&mut print);
    let print: [u8; 32] = print.finalize().into();
    Ok(shared(print, || {
        MintedCredential::new(name.to_string(), Box::new(AssumeRoleGrant { role, url }))
    }))
}

#[async_trait::async_trait]
impl Mint for AssumeRoleGrant {
    fn kind(&self) -> &'static str {
        "aws_assume_role"
    }

    async fn mint(&self) -> Result<Minted, MintError> {
        let now = SystemTime::now();
        let role = &self.role;
        let session = role.session_name.clone().unwrap_or_else(|| {
            let secs = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
            format!("sidecar-session-{secs}")
        });
        let mut form = format!(
            "Action=AssumeRole&DurationSeconds={DURATION_SECONDS}&RoleArn={}&RoleSessionName={}",
            percent::encode(&role.role_arn),
            percent::encode(&session)
        );
        if let Some(external) = &role.external_id {
            form.push_str("&ExternalId=");
            form.push_str(&percent::encode(external));
        }
        form.push_str("&Version=2011-06-15");
        let path = if self.url.base_path.is_empty() {
            "/"
        } else {
            &self.url.base_path
        };
        let request = sigv4::Request {
            method: "POST",
            path,
            query: None,
            host: self.url.host_header(),
            body: form.as_bytes(),
        };
        let signed = role.keys.sign(&request, &role.region, "sts", now);
        let grant = |_| MintError::Grant("the AssumeRole signature cannot be sent".into());
        let mut headers = vec![
            (ACCEPT, HeaderValue::from_static("text/xml")),
            (
                HeaderName::from_static("x-amz-date"),
                HeaderValue::from_str(&signed.amz_date).map_err(grant)?,
            ),
            (
                AUTHORIZATION,
                signed.authorization.to_header_value("").map_err(grant)?,
            ),
        ];
        if let Some(token) = &signed.security_token {
            headers.push((
                HeaderName::from_static("x-amz-security-token"),
                token.to_header_value("").map_err(grant)?,
            ));
        }
        let (status, answer) = post_form(&self.url, Bytes::from(form), &headers).await?;
        let endpoint = self.url.host_header().to_string();
        if status != 200 {
            let code = tag(&answer, "Code")
                .map(|c| format!(": {}", clean(c)))
                .unwrap_or_default();
            return Err(MintError::Refused {
                endpoint,
                status,
                code,
            });
        }
        read_credentials(&answer, now).map_err(|what| MintError::Malformed {
            endpoint,
            what: what.to_string(),
        })
    }
}

/// The temporary keys and their lifetime from an `AssumeRoleResponse`.
fn read_credentials(answer: &[u8], now: SystemTime) -> Result<Minted, &'static str> {
    let credentials = tag(answer, "Credentials").ok_or("the answer has no Credentials")?;
    let field = |name| tag(credentials.as_bytes(), name).filter(|v| !v.is_empty());
    let key_id = field("AccessKeyId").ok_or("the answer has no AccessKeyId")?;
    let secret = field("SecretAccessKey").ok_or("the answer has no SecretAccessKey")?;
    let token = field("SessionToken").ok_or("the answer has no SessionToken")?;
    let expiration = field("Expiration").ok_or("the answer has no Expiration")?;
    let expires = humantime::parse_rfc3339_weak(expiration.trim_end_matches('Z'))
        .map_err(|_| "the answer's Expiration is not a time")?;
    let lifetime = expires
        .duration_since(now)
        .ok()
        .filter(|l| !l.is_zero())
        .ok_or("the answer's Expiration has passed")?
        .min(MAX_LIFETIME);
    let keys = Keys::new(
        key_id.to_string(),
        Secret::new(secret.to_string()),
        Some(Secret::new(token.to_string())),
    );
    Ok(Minted {
        token: Issued::Aws(Arc::new(keys)),
        lifetime,
    })
}

/// The text of the first `<name>…</name>` element in `xml` (STS answers hold no attributes or
/// escapes in the fields read: keys, tokens, times and error codes).
fn tag<'a>(xml: &'a [u8], name: &str) -> Option<&'a str> {
    let xml = std::str::from_utf8(xml).ok()?;
    let open = format!("<{name}>");
    let start = xml.find(&open)? + open.len();
    let end = start + xml[start..].find(&format!("</{name}>"))?;
    Some(xml[start..end].trim())
}

/// An error code as shown: letters, digits, `.` and `_`, at most 64 of them.
fn clean(code: &str) -> String {
    code.chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_'))
        .take(64)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANSWER: &str = "<AssumeRoleResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\
        <AssumeRoleResult><AssumedRoleUser><Arn>arn:aws:sts::1:assumed-role/r/s</Arn>\
        </AssumedRoleUser><Credentials><AccessKeyId>ASIATEMP</AccessKeyId>\
        <SecretAccessKey>temp-secret</SecretAccessKey><SessionToken>temp-token</SessionToken>\
        <Expiration>2015-08-30T13:36:00Z</Expiration></Credentials></AssumeRoleResult>\
        </AssumeRoleResponse>";

    #[test]
    fn an_answer_gives_temporary_keys_living_until_their_expiration() {
        let now = UNIX_EPOCH + Duration::from_secs(1_440_938_160);
        let minted = read_credentials(ANSWER.as_bytes(), now).expect("keys");
        assert_eq!(minted.lifetime, Duration::from_secs(3600));
        let Issued::Aws(keys) = minted.token else {
            panic!("AWS keys expected")
        };
        assert_eq!(keys.access_key_id, "ASIATEMP");
        assert!(keys.has_session_token());
        let later = now + Duration::from_secs(7200);
        assert_eq!(
            read_credentials(ANSWER.as_bytes(), later).err(),
            Some("the answer's Expiration has passed")
        );
        let missing = ANSWER.replace("<SessionToken>temp-token</SessionToken>", "");
        assert!(read_credentials(missing.as_bytes(), now).is_err());
    }

    #[test]
    fn a_refusal_is_reduced_to_its_code() {
        let refusal = b"<ErrorResponse><Error><Type>Sender</Type><Code>AccessDenied</Code>\
            <Message>User arn:aws:iam::1:user/x is not authorized</Message></Error></ErrorResponse>";
        assert_eq!(tag(refusal, "Code").map(clean), Some("AccessDenied".into()));
        assert_eq!(clean("Bad\r\nCode<x>"), "BadCodex");
    }
}
