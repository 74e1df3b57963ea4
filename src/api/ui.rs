//! The product inspector: server-rendered, read-only HTML pages for people (`/ui/...`).
//!
//! Pages are [`maud`] templates, which escape every interpolated value, so a hostile
//! product name is shown, never run. No JavaScript. Reading needs the same token as the
//! JSON routes: an `Authorization: Bearer` header (scripts), or the token posted once to
//! the login form, kept in an `HttpOnly`, `SameSite=Strict` session cookie scoped to
//! `/ui` (the browser forgets it when it closes; page scripts cannot read it; other sites
//! cannot make the browser send it).
//!
//! These routes are not in [`crate::api::ROUTES`]: they are HTML for people, not part of
//! the documented JSON API.

use std::collections::{BTreeMap, HashMap};

use actix_web::cookie::{Cookie, SameSite};
use actix_web::http::{header, StatusCode};
use actix_web::{web, FromRequest, HttpRequest, HttpResponse};
use maud::{html, Markup, PreEscaped, DOCTYPE};
use serde_json::Value;

use crate::api::auth::{Authenticator, Claims};
use crate::api::error::ApiError;
use crate::api::provenance::explained;
use crate::api::reads::{load, parse_list_query};
use crate::app::service::Service;
use crate::core::package;
use crate::core::provenance::{Leaf, SetBy};
use crate::core::record::HistoryEntry;

/// The session cookie holding the token.
pub const COOKIE: &str = "pinv_token";

/// Registers the `/ui` pages.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/ui", web::get().to(|| async { see_other("/ui/") }))
        .route("/ui/", web::get().to(search))
        .route("/ui/login", web::get().to(login_form))
        .route("/ui/login", web::post().to(login))
        .route("/ui/logout", web::post().to(logout))
        .route("/ui/products/{id}", web::get().to(product));
}

fn see_other(location: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, location))
        .finish()
}

fn page(status: StatusCode, title: &str, body: Markup) -> HttpResponse {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { (title) " · PINV inspector" }
                style { (PreEscaped(CSS)) }
            }
            body {
                header.top {
                    a href="/ui/" { "PINV inspector" }
                    form method="post" action="/ui/logout" { button { "Log out" } }
                }
                main { (body) }
            }
        }
    };
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(markup.into_string())
}

/// The claims of the request: its bearer token if it sends one, else the session cookie.
async fn claims(req: &HttpRequest) -> Result<Claims, ApiError> {
    if req.headers().contains_key(header::AUTHORIZATION) {
        return Claims::extract(req).await;
    }
    let token = req
        .cookie(COOKIE)
        .ok_or_else(|| ApiError::unauthorized("not logged in"))?;
    let auth = req
        .app_data::<web::Data<Authenticator>>()
        .ok_or_else(|| ApiError::unauthorized("authentication is not configured"))?;
    auth.verify(token.value())
}

fn login_page(status: StatusCode, problem: Option<&str>) -> HttpResponse {
    page(
        status,
        "Log in",
        html! {
            h1 { "Log in" }
            @if let Some(problem) = problem { p.problem { (problem) } }
            p { "Paste a PINV token (the bearer token of the JSON API). It is kept in a session cookie for /ui only, until the browser closes or you log out." }
            form method="post" action="/ui/login" {
                textarea name="token" rows="4" cols="80" required {}
                br;
                button type="submit" { "Log in" }
            }
        },
    )
}

async fn login_form() -> HttpResponse {
    login_page(StatusCode::OK, None)
}

#[derive(serde::Deserialize)]
struct LoginForm {
    token: String,
    /// The `/ui/...` page to go to once logged in (default `/ui/`).
    next: Option<String>,
}

async fn login(req: HttpRequest, form: web::Form<LoginForm>) -> HttpResponse {
    let token = form.token.trim();
    // Only pages of the inspector: never an open redirect to another site.
    let next = form
        .next
        .as_deref()
        .filter(|n| n.starts_with("/ui/") && !n.contains("//") && !n.contains('\\'))
        .unwrap_or("/ui/");
    let verified = req
        .app_data::<web::Data<Authenticator>>()
        .map(|auth| auth.verify(token));
    match verified {
        Some(Ok(_)) => {
            let cookie = Cookie::build(COOKIE, token.to_owned())
                .path("/ui")
                .http_only(true)
                .same_site(SameSite::Strict)
                .secure(req.connection_info().scheme() == "https")
                .finish();
            // A page that moves on by itself rather than a redirect: after a login posted
            // from elsewhere (a bookmark page, a script), a redirect would still count as
            // that other site's navigation and the browser would hold the Strict cookie back.
            let markup = html! {
                (DOCTYPE)
                html lang="en" {
                    head {
                        meta charset="utf-8";
                        meta http-equiv="refresh" content={ "0; url=" (next) };
                        title { "Logged in · PINV inspector" }
                    }
                    body { p { "Logged in. " a href=(next) { "Continue" } } }
                }
            };
            let mut res = HttpResponse::Ok()
                .content_type("text/html; charset=utf-8")
                .body(markup.into_string());
            res.add_cookie(&cookie).expect("a valid cookie");
            res
        }
        Some(Err(e)) => login_page(StatusCode::UNAUTHORIZED, Some(&e.message)),
        None => login_page(
            StatusCode::UNAUTHORIZED,
            Some("authentication is not configured"),
        ),
    }
}

async fn logout() -> HttpResponse {
    let mut cookie = Cookie::build(COOKIE, "").path("/ui").finish();
    cookie.make_removal();
    let mut res = see_other("/ui/login");
    res.add_cookie(&cookie).expect("a valid cookie");
    res
}

/// An error of a page, as a page (a `401` shows the login form).
fn error_page(e: ApiError) -> HttpResponse {
    let status = e.code.status();
    if status == StatusCode::UNAUTHORIZED {
        return login_page(status, Some(&e.message));
    }
    page(
        status,
        e.code.code(),
        html! {
            h1 { (status.as_u16()) " " (e.code.code()) }
            p.problem { (e.message) }
            p { a href="/ui/" { "Search products" } }
        },
    )
}

/// Filters offered by the search form; any other `GET /products` filter works in the URL.
const SEARCH_FIELDS: &[&str] = &[
    "name",
    "status",
    "externalReference.id",
    "productSpecification.id",
];

/// `/ui/`: the search page, filtering as `GET /products` does (empty fields ignored).
async fn search(req: HttpRequest, service: web::Data<Service>) -> HttpResponse {
    match search_page(&req, &service).await {
        Ok(res) => res,
        Err(e) => error_page(e),
    }
}

async fn search_page(req: &HttpRequest, service: &Service) -> Result<HttpResponse, ApiError> {
    claims(req).await?;
    let pairs: Vec<(String, String)> = crate::api::query::pairs(req.query_string())?
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .collect();
    let query: String = url_query(&pairs);
    let list = parse_list_query(&query)?;
    let result = service.store.list(&list).await?;
    let value_of = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.as_str())
    };
    let next = list.offset + result.items.len() as u64;
    let mut next_pairs: Vec<(String, String)> = pairs
        .iter()
        .filter(|(k, _)| k != "offset")
        .cloned()
        .collect();
    next_pairs.push(("offset".to_owned(), next.to_string()));
    let body = html! {
        h1 { "Products" }
        form.search method="get" action="/ui/" {
            @for field in SEARCH_FIELDS {
                label { (field) " " input type="text" name=(field) value=(value_of(field)); }
            }
            @for (k, v) in pairs.iter().filter(|(k, _)| !SEARCH_FIELDS.contains(&k.as_str()) && k != "offset") {
                label { (k) " " input type="text" name=(k) value=(v); }
            }
            button type="submit" { "Search" }
        }
        p.count { (result.total) " products match; showing " (result.items.len()) " from " (list.offset) "." }
        table.results {
            thead { tr { th { "name" } th { "status" } th { "specification" } th { "id" } } }
            tbody {
                @for doc in &result.items {
                    @let id = doc.get("id").and_then(Value::as_str).unwrap_or("");
                    tr {
                        td { a href={ "/ui/products/" (id) } { (text(doc.get("name"))) } }
                        td { (text(doc.get("status"))) }
                        td { (text(doc.pointer("/productSpecification/id"))) }
                        td.mono { a href={ "/ui/products/" (id) } { (id) } }
                    }
                }
            }
        }
        @if next < result.total {
            p { a href={ "/ui/?" (url_query(&next_pairs)) } { "Next page" } }
        }
    };
    Ok(page(StatusCode::OK, "Products", body))
}

fn url_query(pairs: &[(String, String)]) -> String {
    let encode = |s: &str| {
        percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
    };
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn text(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
    }
}

/// `/ui/products/{id}`: the inspector of one product.
async fn product(
    req: HttpRequest,
    id: web::Path<String>,
    service: web::Data<Service>,
) -> HttpResponse {
    match product_page(&req, &id, &service).await {
        Ok(res) => res,
        Err(e) => error_page(e),
    }
}

async fn product_page(
    req: &HttpRequest,
    raw_id: &str,
    service: &Service,
) -> Result<HttpResponse, ApiError> {
    claims(req).await?;
    let record = load(service, raw_id).await?;
    let explained = explained(service, raw_id, "").await;
    let mut history = service.store.history(&record.id).await?;
    history.sort_by_key(|e| e.revision);
    let members = match record.package_root {
        Some(root) => service.package_members([root], &[]).await?,
        None => Vec::new(),
    };

    // One colour per source, in the order of the contributions (sorted by source).
    let colours: BTreeMap<String, usize> = record
        .contributions
        .iter()
        .enumerate()
        .map(|(i, c)| (c.source.to_string(), i % PALETTE))
        .collect();
    let (explanation, explain_problem) = match explained {
        Ok(e) => (Some(e.explanation), None),
        Err(e) => (None, Some(e.message)),
    };
    let leaves: HashMap<&str, Leaf<'_>> = explanation
        .iter()
        .flat_map(|e| e.leaves())
        .map(|l| (l.pointer, l))
        .collect();
    let name = text(record.merged.get("name"));
    let title = if name.is_empty() {
        raw_id.to_owned()
    } else {
        name.clone()
    };

    let body = html! {
        h1 { (title) }
        p.meta {
            "PINV id " span.mono { (record.id.to_string()) }
            " · revision " (record.revision)
            " · rules " span.mono title=(record.rules_hash) { (short(&record.rules_hash)) }
            " · " a href={ "/products/" (record.id.to_string()) "/provenance" } { "provenance JSON" }
        }
        section.legend {
            h2 { "Sources" }
            ul {
                @for (source, colour) in &colours {
                    li { span class={ "src src-" (colour) } { (source) } }
                }
                li { span.src.pinv { "set by PINV" } }
            }
        }
        @if !members.is_empty() {
            section.package {
                h2 { "Package" }
                (package_diagram(&record.id.to_string(), &members, &service.rules))
            }
        }
        section.merged {
            h2 { "Merged document" }
            @if let Some(problem) = &explain_problem {
                p.problem { "No provenance: " (problem) }
            }
            div.doc { (tree(&record.merged, "", &leaves, &colours)) }
        }
        section.contributions {
            h2 { "Contributions" }
            div.side {
                @for c in &record.contributions {
                    @let colour = colours.get(c.source.as_str()).copied().unwrap_or(0);
                    div.contribution {
                        h3 { span class={ "src src-" (colour) } { (c.source.to_string()) } }
                        p.meta { "event " span.mono { (c.event_id.to_string()) } br; "time " (c.time.to_rfc3339()) br; "received " (c.received_at.to_rfc3339()) }
                        pre { (serde_json::to_string_pretty(&c.value).unwrap_or_default()) }
                    }
                }
            }
        }
        section.history {
            h2 { "History" }
            (timeline(&history))
        }
    };
    Ok(page(StatusCode::OK, &title, body))
}

const PALETTE: usize = 8;

fn short(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}

/// The merged document as nested lists, each leaf coloured by the source it came from.
fn tree(
    value: &Value,
    pointer: &str,
    leaves: &HashMap<&str, Leaf<'_>>,
    colours: &BTreeMap<String, usize>,
) -> Markup {
    let token = |k: &str| crate::core::pointer_token(k);
    match value {
        Value::Object(o) if !o.is_empty() => html! {
            ul.obj {
                @for (k, v) in o {
                    li { span.key { (k) ": " } (tree(v, &format!("{pointer}/{}", token(k)), leaves, colours)) }
                }
            }
        },
        Value::Array(a) if !a.is_empty() => html! {
            ol.arr start="0" {
                @for (i, v) in a.iter().enumerate() {
                    li { (tree(v, &format!("{pointer}/{i}"), leaves, colours)) }
                }
            }
        },
        leaf => {
            let shown = serde_json::to_string(leaf).unwrap_or_default();
            match leaves.get(pointer) {
                Some(l) => {
                    let class = match (&l.set_by, &l.from) {
                        (SetBy::Pinv, _) => "val pinv".to_owned(),
                        (SetBy::Source, Some(f)) => format!(
                            "val src-{}",
                            colours.get(f.source.as_str()).copied().unwrap_or(0)
                        ),
                        (SetBy::Source, None) => "val".to_owned(),
                    };
                    html! { span class=(class) title=(describe(l)) { (shown) } }
                }
                None => html! { span.val { (shown) } },
            }
        }
    }
}

/// A leaf's provenance in words (the tooltip).
fn describe(l: &Leaf<'_>) -> String {
    let mut out = String::new();
    if let Some(f) = &l.from {
        out.push_str(&format!(
            "{} · event {} · {}",
            f.source,
            f.event_id,
            f.time.to_rfc3339()
        ));
    }
    if let Some(r) = &l.rule {
        let strategy = serde_json::to_value(r.strategy)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        out.push_str(&format!(
            " · rule {} ({strategy})",
            r.path.as_deref().unwrap_or("default")
        ));
    }
    if let Some(reason) = &l.reason {
        out.push_str(&format!(" · PINV: {reason}"));
    }
    out
}

/// One patch operation: op, path, value before, value after.
type PatchRow = (String, String, String, String);

/// The history, oldest first, each change as before/after per patch operation.
fn timeline(history: &[HistoryEntry]) -> Markup {
    let mut document = Value::Object(Default::default());
    let mut rows: Vec<(Vec<PatchRow>, &HistoryEntry)> = Vec::new();
    for entry in history {
        let mut ops = Vec::new();
        for op in entry.patch.as_array().into_iter().flatten() {
            let kind = text(op.get("op"));
            let path = text(op.get("path"));
            let before = document.pointer(&path).map(compact).unwrap_or_default();
            let after = op.get("value").map(compact).unwrap_or_default();
            ops.push((kind, path, before, after));
        }
        if let Ok(patch) = serde_json::from_value::<json_patch::Patch>(entry.patch.clone()) {
            // A patch that does not apply leaves the later "before" columns stale, nothing worse.
            let _ = json_patch::patch(&mut document, &patch);
        }
        rows.push((ops, entry));
    }
    html! {
        ol.timeline {
            @for (ops, e) in rows.iter().rev() {
                li.change {
                    p.meta {
                        strong { "revision " (e.revision) }
                        " · " (e.time.to_rfc3339())
                        " · by " span.mono { (e.event.source) } " event " span.mono { (e.event.id) }
                        " · rules " span.mono title=(e.rules_hash) { (short(&e.rules_hash)) }
                    }
                    table.patch {
                        thead { tr { th { "op" } th { "path" } th { "before" } th { "after" } } }
                        tbody {
                            @for (kind, path, before, after) in ops {
                                tr { td { (kind) } td.mono { (path) } td.before { (before) } td.after { (after) } }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn compact(v: &Value) -> String {
    let s = serde_json::to_string(v).unwrap_or_default();
    if s.chars().count() > 300 {
        format!("{}…", s.chars().take(300).collect::<String>())
    } else {
        s
    }
}

/// The parts of a package as boxes in package order, with each part's relationships to
/// the others as links.
fn package_diagram(
    current: &str,
    members: &[crate::core::record::ProductRecord],
    rules: &crate::core::rules::Rules,
) -> Markup {
    let ids: Vec<String> = members.iter().map(|m| m.id.to_string()).collect();
    html! {
        div.diagram {
            @for m in members {
                @let id = m.id.to_string();
                @let role = package::role_of(&m.merged, rules).map_or("part", |r| r.as_str());
                div class={ "part" @if id == current { " current" } } {
                    p.role { (role) }
                    p { a href={ "/ui/products/" (id) } { (text(m.merged.get("name"))) } }
                    p.mono.small { (id) }
                    ul.rels {
                        @for rel in m.merged.get("productRelationship").and_then(Value::as_array).into_iter().flatten() {
                            @let target = text(rel.get("id"));
                            li {
                                "→ " (text(rel.get("relationshipType"))) " "
                                @if ids.contains(&target) {
                                    a.mono href={ "/ui/products/" (target) } { (short(&target)) }
                                } @else {
                                    span.mono { (target) }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

const CSS: &str = r#"
body { font: 14px/1.4 system-ui, sans-serif; margin: 0; color: #222; }
header.top { display: flex; justify-content: space-between; align-items: center; padding: .5em 1em; background: #1d3557; }
header.top a { color: #fff; font-weight: bold; text-decoration: none; }
header.top form { margin: 0; }
main { padding: 1em 2em; }
.mono { font-family: ui-monospace, monospace; }
.small { font-size: 11px; }
.meta { color: #555; }
.problem { color: #a00; font-weight: bold; }
.src { padding: 1px 6px; border-radius: 3px; }
.legend ul { list-style: none; padding: 0; display: flex; gap: .8em; flex-wrap: wrap; }
.src-0 { background: #cfe8ff; } .src-1 { background: #ffe0b3; } .src-2 { background: #d4f5d0; }
.src-3 { background: #f5d0e8; } .src-4 { background: #e6dcff; } .src-5 { background: #fff6a8; }
.src-6 { background: #c8f0ee; } .src-7 { background: #f0d6c8; }
.pinv { background: #e0e0e0; border: 1px dashed #888; }
.doc ul, .doc ol { margin: 0; padding-left: 1.4em; }
.doc ul { list-style: none; }
.doc .key { color: #1d3557; }
.val { font-family: ui-monospace, monospace; padding: 0 3px; border-radius: 3px; }
.side { display: flex; gap: 1em; overflow-x: auto; }
.contribution { flex: 1; min-width: 300px; border: 1px solid #ccc; border-radius: 4px; padding: .5em; }
.contribution pre { font-size: 12px; white-space: pre-wrap; }
.timeline { list-style: none; padding-left: 1em; border-left: 3px solid #1d3557; }
.change { margin-bottom: 1em; }
table { border-collapse: collapse; }
td, th { border: 1px solid #ddd; padding: 2px 6px; text-align: left; vertical-align: top; }
td.before { background: #fde2e2; font-family: ui-monospace, monospace; }
td.after { background: #e2fde4; font-family: ui-monospace, monospace; }
.diagram { display: flex; gap: 1.5em; flex-wrap: wrap; }
.part { border: 2px solid #1d3557; border-radius: 6px; padding: .5em 1em; min-width: 200px; }
.part.current { background: #eef4fb; }
.part .role { font-weight: bold; margin: 0; }
.rels { list-style: none; padding: 0; }
form.search label { margin-right: 1em; }
"#;
