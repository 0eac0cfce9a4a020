//! A fake Spotify: the accounts service (`/authorize`, `/api/token`) and the Web API
//! (`/v1/…`) on one local port, standing where Spotify stands for Segue's accounts client
//! (reqwest) and its rspotify calls. Bodies follow `../shared/specs/spotify-web-api.yml`
//! and parse with rspotify-model 0.16.1. Tests steer it (who consents, what plays, which
//! calls fail) and read back what it saw (calls, refreshes, tokens it issued).
//!
//! Error bodies: the accounts service answers OAuth's `{"error","error_description"}`, the
//! Web API `{"error":{"status","message"}}`; injected [`Failure`]s answer the Web API shape
//! on both.

use std::collections::{HashMap, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use chrono::{DateTime, SecondsFormat, Utc};
use rand::Rng as _;
use serde_json::{Value, json};

/// The client id the fake accepts.
pub const CLIENT_ID: &str = "test-client-id";
/// The client secret the fake accepts.
pub const CLIENT_SECRET: &str = "test-client-secret";

/// What a user is playing, as [`FakeSpotify::set_playing`] sets it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Playing {
    /// Nothing: `currently-playing` answers 204 with no body.
    #[default]
    Nothing,
    /// A catalogue track.
    Track {
        id: String,
        progress_ms: u64,
        is_playing: bool,
    },
    /// A podcast episode (its item shows only to clients asking for episodes).
    Episode { name: String, show: String },
    /// A local file: a track without id, `is_local: true`.
    LocalFile { name: String, artist: String },
}

/// How an injected failure answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// 429 with `Retry-After: N`.
    RateLimited { retry_after_secs: u64 },
    /// This status (meant for 5xx) with a JSON error body.
    Status(u16),
}

/// The scopes the accounts service knows (the spec's `oauth_2_0` list).
const KNOWN_SCOPES: &[&str] = &[
    "app-remote-control",
    "playlist-read-private",
    "playlist-read-collaborative",
    "playlist-modify-public",
    "playlist-modify-private",
    "user-library-read",
    "user-library-modify",
    "user-read-private",
    "user-read-email",
    "user-follow-read",
    "user-follow-modify",
    "user-top-read",
    "user-read-playback-position",
    "user-read-playback-state",
    "user-read-recently-played",
    "user-read-currently-playing",
    "user-modify-playback-state",
    "ugc-image-upload",
    "streaming",
];

/// Markets listed on albums (`available_markets` is required on albums, though deprecated).
const MARKETS: &[&str] = &["DE", "GB", "US"];

/// One catalogue track with what its TrackObject needs.
#[derive(Clone)]
struct Track {
    id: String,
    name: String,
    artists: Vec<String>,
    album: String,
    album_type: &'static str,
    release_date: String,
    total_tracks: u32,
    track_number: u32,
    duration_ms: u64,
}

/// A default catalogue track.
struct Entry {
    id: &'static str,
    name: &'static str,
    artists: &'static [&'static str],
    album: &'static str,
    release_date: &'static str,
    track_number: u32,
    duration_ms: u64,
}

/// The default catalogue.
const CATALOGUE: &[Entry] = &[
    Entry {
        id: "4uLU6hMCjMI75M1A2tKUQC",
        name: "Never Gonna Give You Up",
        artists: &["Rick Astley"],
        album: "Whenever You Need Somebody",
        release_date: "1987-11-12",
        track_number: 1,
        duration_ms: 213_573,
    },
    Entry {
        id: "0VjIjW4GlUZAMYd2vXMi3b",
        name: "Blinding Lights",
        artists: &["The Weeknd"],
        album: "After Hours",
        release_date: "2020-03-20",
        track_number: 9,
        duration_ms: 200_040,
    },
    Entry {
        id: "3n3Ppam7vgaVa1iaRUc9Lp",
        name: "Mr. Brightside",
        artists: &["The Killers"],
        album: "Hot Fuss",
        release_date: "2004-06-07",
        track_number: 2,
        duration_ms: 222_973,
    },
    Entry {
        id: "2fuCquhmrzHpu5xcA1ci9x",
        name: "Under Pressure",
        artists: &["Queen", "David Bowie"],
        album: "Hot Space",
        release_date: "1982-05-21",
        track_number: 11,
        duration_ms: 248_440,
    },
    Entry {
        id: "11dFghVXANMlKmJXsNCbNl",
        name: "Cut To The Feeling",
        artists: &["Carly Rae Jepsen"],
        album: "Cut To The Feeling",
        release_date: "2017-05-26",
        track_number: 1,
        duration_ms: 207_959,
    },
];

/// An authorization code handed out by `/authorize`.
struct Code {
    redirect_uri: String,
    user: String,
    scopes: Vec<String>,
    used: bool,
}

/// An access token; `user: None` for an app (client-credentials) token.
struct AccessToken {
    token: String,
    user: Option<String>,
    scopes: Vec<String>,
    expires: Instant,
    revoked: bool,
}

/// A refresh token; `dead` once revoked or rotated out.
struct RefreshToken {
    token: String,
    user: String,
    scopes: Vec<String>,
    dead: bool,
}

struct Inner {
    /// Spotify users: id → display name.
    users: HashMap<String, String>,
    /// Who consents at `/authorize`.
    consenting: Option<String>,
    deny_next: bool,
    catalogue: Vec<Track>,
    /// What each user plays, and since when (unix ms).
    playing: HashMap<String, (Playing, i64)>,
    /// Each user's plays: (track id, played at).
    plays: HashMap<String, Vec<(String, DateTime<Utc>)>>,
    codes: HashMap<String, Code>,
    access: Vec<AccessToken>,
    refresh: Vec<RefreshToken>,
    lifetime: Duration,
    rotate: bool,
    /// Injected Web API failures: (path prefix, failure), one entry per failing call.
    failures: Vec<(String, Failure)>,
    token_failures: VecDeque<Failure>,
    /// Paths of the Web API calls received.
    calls: Vec<String>,
    /// `grant_type` of each token call received.
    token_calls: Vec<String>,
    refreshes: HashMap<String, usize>,
    authorize_requests: Vec<HashMap<String, String>>,
}

impl Inner {
    fn new() -> Self {
        let catalogue = CATALOGUE
            .iter()
            .map(|e| Track {
                id: e.id.to_owned(),
                name: e.name.to_owned(),
                artists: e.artists.iter().map(|a| (*a).to_owned()).collect(),
                album: e.album.to_owned(),
                album_type: "album",
                release_date: e.release_date.to_owned(),
                total_tracks: e.track_number.max(10),
                track_number: e.track_number,
                duration_ms: e.duration_ms,
            })
            .collect();
        Self {
            users: HashMap::new(),
            consenting: None,
            deny_next: false,
            catalogue,
            playing: HashMap::new(),
            plays: HashMap::new(),
            codes: HashMap::new(),
            access: Vec::new(),
            refresh: Vec::new(),
            lifetime: Duration::from_secs(3600),
            rotate: false,
            failures: Vec::new(),
            token_failures: VecDeque::new(),
            calls: Vec::new(),
            token_calls: Vec::new(),
            refreshes: HashMap::new(),
            authorize_requests: Vec::new(),
        }
    }

    fn track(&self, id: &str) -> Option<&Track> {
        self.catalogue.iter().find(|t| t.id == id)
    }

    /// A new access token (`user: None` for the app), as the token endpoint answers it.
    fn issue(&mut self, user: Option<&str>, scopes: &[String], with_refresh: bool) -> Value {
        let token = random_token(64);
        self.access.push(AccessToken {
            token: token.clone(),
            user: user.map(str::to_owned),
            scopes: scopes.to_vec(),
            expires: Instant::now() + self.lifetime,
            revoked: false,
        });
        let mut answer = json!({
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": self.lifetime.as_secs(),
        });
        if let Some(user) = user {
            answer["scope"] = json!(scopes.join(" "));
            if with_refresh {
                let refresh = random_token(64);
                self.refresh.push(RefreshToken {
                    token: refresh.clone(),
                    user: user.to_owned(),
                    scopes: scopes.to_vec(),
                    dead: false,
                });
                answer["refresh_token"] = json!(refresh);
            }
        }
        answer
    }
}

/// The running fake.
#[derive(Clone)]
pub struct FakeSpotify {
    url: String,
    inner: Arc<Mutex<Inner>>,
}

impl FakeSpotify {
    /// Binds 127.0.0.1 on a free port and serves both the accounts service and the Web API.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let fake = Self {
            url: format!("http://{}", listener.local_addr().unwrap()),
            inner: Arc::new(Mutex::new(Inner::new())),
        };
        let app = axum::Router::new()
            .route("/authorize", axum::routing::get(authorize))
            .route("/api/token", axum::routing::post(token))
            .fallback(web_api)
            .with_state(fake.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        fake
    }

    /// The accounts service's base, `http://127.0.0.1:PORT` (no trailing slash).
    /// Points a Segue configuration at this fake, with its client credentials.
    pub fn configure(&self, c: &mut segue::Config) {
        c.spotify.client_id = CLIENT_ID.to_owned();
        c.spotify.client_secret = segue_bot::Secret::new(CLIENT_SECRET);
        c.spotify.accounts_url = self.accounts_url().parse().unwrap();
        c.spotify.api_url = self.api_url().parse().unwrap();
    }

    pub fn accounts_url(&self) -> String {
        self.url.clone()
    }

    /// The Web API's base, `http://127.0.0.1:PORT/v1` (no trailing slash).
    pub fn api_url(&self) -> String {
        format!("{}/v1", self.url)
    }

    fn state(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds (or renames) a Spotify user.
    pub fn add_user(&self, id: &str, display_name: &str) {
        self.state()
            .users
            .insert(id.to_owned(), display_name.to_owned());
    }

    /// From now on `/authorize` consents as this user (added, named after the id, if new).
    pub fn authorize_as(&self, id: &str) {
        let mut s = self.state();
        s.users
            .entry(id.to_owned())
            .or_insert_with(|| id.to_owned());
        s.consenting = Some(id.to_owned());
    }

    /// The next valid `/authorize` redirects with `error=access_denied`.
    pub fn deny_next_authorize(&self) {
        self.state().deny_next = true;
    }

    /// Adds (or replaces) a catalogue track, alone on a single of the same name.
    pub fn add_track(&self, id: &str, name: &str, artist: &str, duration_ms: u64) {
        assert!(is_base62_id(id), "{id:?} is not a 22-character base62 id");
        let track = Track {
            id: id.to_owned(),
            name: name.to_owned(),
            artists: vec![artist.to_owned()],
            album: name.to_owned(),
            album_type: "single",
            release_date: "2024-04-19".to_owned(),
            total_tracks: 1,
            track_number: 1,
            duration_ms,
        };
        let mut s = self.state();
        s.catalogue.retain(|t| t.id != id);
        s.catalogue.push(track);
    }

    /// Ids of the catalogue's tracks, in catalogue order (the defaults first).
    pub fn track_ids(&self) -> Vec<String> {
        self.state()
            .catalogue
            .iter()
            .map(|t| t.id.clone())
            .collect()
    }

    /// The TrackObject the Web API serves for a catalogue track (panics if unknown).
    pub fn track_json(&self, id: &str) -> Value {
        let api = self.api_url();
        let s = self.state();
        let track = s
            .track(id)
            .unwrap_or_else(|| panic!("no track {id} in the catalogue"));
        track_object(&api, track)
    }

    /// Sets what a user is playing (a `Track` must be in the catalogue).
    pub fn set_playing(&self, user: &str, playing: Playing) {
        let mut s = self.state();
        if let Playing::Track { id, .. } = &playing {
            assert!(s.track(id).is_some(), "no track {id} in the catalogue");
        }
        let since = Utc::now().timestamp_millis();
        s.playing.insert(user.to_owned(), (playing, since));
    }

    /// Records that a user played a catalogue track at `played_at`.
    pub fn record_play(&self, user: &str, track_id: &str, played_at: DateTime<Utc>) {
        let mut s = self.state();
        assert!(
            s.track(track_id).is_some(),
            "no track {track_id} in the catalogue"
        );
        s.plays
            .entry(user.to_owned())
            .or_default()
            .push((track_id.to_owned(), played_at));
    }

    /// The user withdraws Segue's access: their refresh tokens answer `invalid_grant` and
    /// their access tokens 401 from now on (tokens from a later authorization work).
    pub fn revoke(&self, user: &str) {
        let mut s = self.state();
        for t in s
            .access
            .iter_mut()
            .filter(|t| t.user.as_deref() == Some(user))
        {
            t.revoked = true;
        }
        for t in s.refresh.iter_mut().filter(|t| t.user == user) {
            t.dead = true;
        }
        for c in s.codes.values_mut().filter(|c| c.user == user) {
            c.used = true;
        }
    }

    /// Lifetime of access tokens issued from now on (default one hour).
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        self.state().lifetime = lifetime;
    }

    /// When on, each refresh answers a new refresh token and the old one stops working.
    pub fn rotate_refresh_tokens(&self, rotate: bool) {
        self.state().rotate = rotate;
    }

    /// The next `n` Web API calls whose path starts with `path_prefix` fail so.
    pub fn fail_next(&self, path_prefix: &str, n: usize, failure: Failure) {
        let mut s = self.state();
        for _ in 0..n {
            s.failures.push((path_prefix.to_owned(), failure));
        }
    }

    /// The next `n` token-endpoint calls fail so.
    pub fn fail_next_token(&self, n: usize, failure: Failure) {
        let mut s = self.state();
        for _ in 0..n {
            s.token_failures.push_back(failure);
        }
    }

    /// Web API calls so far whose path starts with `path_prefix`, failed ones included.
    pub fn calls(&self, path_prefix: &str) -> usize {
        let s = self.state();
        s.calls
            .iter()
            .filter(|p| p.starts_with(path_prefix))
            .count()
    }

    /// Successful refresh-token grants for a Spotify user.
    pub fn refreshes(&self, user: &str) -> usize {
        self.state().refreshes.get(user).copied().unwrap_or(0)
    }

    /// Token-endpoint calls with this `grant_type`, failed ones included.
    pub fn token_calls(&self, grant_type: &str) -> usize {
        let s = self.state();
        s.token_calls.iter().filter(|g| *g == grant_type).count()
    }

    /// The query parameters of every `/authorize` request, valid or not.
    pub fn authorize_requests(&self) -> Vec<HashMap<String, String>> {
        self.state().authorize_requests.clone()
    }

    /// Every refresh token issued for a user, oldest first.
    pub fn issued_refresh_tokens(&self, user: &str) -> Vec<String> {
        let s = self.state();
        s.refresh
            .iter()
            .filter(|t| t.user == user)
            .map(|t| t.token.clone())
            .collect()
    }

    /// Every access token issued for a user, oldest first.
    pub fn issued_access_tokens(&self, user: &str) -> Vec<String> {
        let s = self.state();
        s.access
            .iter()
            .filter(|t| t.user.as_deref() == Some(user))
            .map(|t| t.token.clone())
            .collect()
    }
}

// ---------------------------------------------------------------------------------------
// Small helpers.

fn random_token(len: usize) -> String {
    rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// A stable, real-looking 22-character base62 id derived from `seed`.
fn derived_id(seed: &str) -> String {
    const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    (0..22u8)
        .map(|i| {
            let mut h = DefaultHasher::new();
            (seed, i).hash(&mut h);
            char::from(BASE62[(h.finish() % 62) as usize])
        })
        .collect()
}

fn is_base62_id(id: &str) -> bool {
    id.len() == 22 && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

fn query_map(uri: &Uri) -> HashMap<String, String> {
    url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

/// A Web API error: `{"error":{"status","message"}}`.
fn api_error(status: StatusCode, message: &str) -> Response {
    let body = json!({ "error": { "status": status.as_u16(), "message": message } });
    (status, axum::Json(body)).into_response()
}

/// An accounts-service error: `{"error","error_description"}`.
fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    let body = json!({ "error": error, "error_description": description });
    (status, axum::Json(body)).into_response()
}

/// An `/authorize` refusal: Spotify shows a page, not a redirect.
fn page_error(message: &str) -> Response {
    (StatusCode::BAD_REQUEST, message.to_owned()).into_response()
}

fn failure_response(failure: Failure) -> Response {
    match failure {
        Failure::RateLimited { retry_after_secs } => (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, retry_after_secs.to_string())],
            axum::Json(json!({ "error": { "status": 429, "message": "API rate limit exceeded" } })),
        )
            .into_response(),
        Failure::Status(code) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            api_error(
                status,
                status.canonical_reason().unwrap_or("Injected failure"),
            )
        }
    }
}

// ---------------------------------------------------------------------------------------
// Payloads, shaped as the spec's objects.

fn external_urls(kind: &str, id: &str) -> Value {
    json!({ "spotify": format!("https://open.spotify.com/{kind}/{id}") })
}

fn images(seed: &str) -> Value {
    let sizes = [640, 300, 64];
    Value::Array(
        sizes
            .iter()
            .map(|size| {
                json!({
                    "url": format!("https://i.scdn.co/image/{}", derived_id(&format!("{seed}:{size}"))),
                    "height": size,
                    "width": size,
                })
            })
            .collect(),
    )
}

/// SimplifiedArtistObject.
fn artist_object(api: &str, name: &str) -> Value {
    let id = derived_id(&format!("artist:{name}"));
    json!({
        "external_urls": external_urls("artist", &id),
        "href": format!("{api}/artists/{id}"),
        "id": id,
        "name": name,
        "type": "artist",
        "uri": format!("spotify:artist:{id}"),
    })
}

/// TrackObject, with its SimplifiedAlbumObject.
fn track_object(api: &str, t: &Track) -> Value {
    let artists: Vec<Value> = t.artists.iter().map(|a| artist_object(api, a)).collect();
    let album_id = derived_id(&format!("album:{}:{}", t.album, t.artists.join(",")));
    let id = &t.id;
    json!({
        "album": {
            "album_type": t.album_type,
            "total_tracks": t.total_tracks,
            "available_markets": MARKETS,
            "external_urls": external_urls("album", &album_id),
            "href": format!("{api}/albums/{album_id}"),
            "id": album_id,
            "images": images(&album_id),
            "name": t.album,
            "release_date": t.release_date,
            "release_date_precision": "day",
            "type": "album",
            "uri": format!("spotify:album:{album_id}"),
            "artists": artists,
        },
        "artists": artists,
        "disc_number": 1,
        "duration_ms": t.duration_ms,
        "explicit": false,
        "external_ids": { "isrc": format!("QZFAK24{:05}", hash_of(id) % 100_000) },
        "external_urls": external_urls("track", id),
        "href": format!("{api}/tracks/{id}"),
        "id": id,
        "is_playable": true,
        "name": t.name,
        "preview_url": null,
        "track_number": t.track_number,
        "type": "track",
        "uri": format!("spotify:track:{id}"),
        "is_local": false,
    })
}

fn hash_of(s: &str) -> u64 {
    let mut h = DefaultHasher::new();
    s.hash(&mut h);
    h.finish()
}

/// A local file as Spotify serves it: a TrackObject without ids, links or album.
fn local_track_object(name: &str, artist: &str) -> Value {
    let duration_ms: u64 = 213_000;
    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    json!({
        "album": {
            "album_type": null,
            "total_tracks": 0,
            "available_markets": [],
            "external_urls": {},
            "href": null,
            "id": null,
            "images": [],
            "name": "",
            "release_date": null,
            "release_date_precision": null,
            "type": "album",
            "uri": null,
            "artists": [],
        },
        "artists": [{
            "external_urls": {},
            "href": null,
            "id": null,
            "name": artist,
            "type": "artist",
            "uri": null,
        }],
        "disc_number": 0,
        "duration_ms": duration_ms,
        "explicit": false,
        "external_ids": {},
        "external_urls": {},
        "href": null,
        "id": null,
        "is_playable": true,
        "name": name,
        "preview_url": null,
        "track_number": 0,
        "type": "track",
        "uri": format!("spotify:local:{}::{}:{}", enc(artist), enc(name), duration_ms / 1000),
        "is_local": true,
    })
}

/// EpisodeObject, with its SimplifiedShowObject.
fn episode_object(api: &str, name: &str, show: &str) -> Value {
    let id = derived_id(&format!("episode:{show}:{name}"));
    let show_id = derived_id(&format!("show:{show}"));
    json!({
        "audio_preview_url": null,
        "description": format!("{name}, an episode of {show}."),
        "html_description": format!("<p>{name}, an episode of {show}.</p>"),
        "duration_ms": 1_800_000,
        "explicit": false,
        "external_urls": external_urls("episode", &id),
        "href": format!("{api}/episodes/{id}"),
        "id": id,
        "images": images(&id),
        "is_externally_hosted": false,
        "is_playable": true,
        "language": "en",
        "languages": ["en"],
        "name": name,
        "release_date": "2024-03-01",
        "release_date_precision": "day",
        "resume_point": { "fully_played": false, "resume_position_ms": 0 },
        "type": "episode",
        "uri": format!("spotify:episode:{id}"),
        "show": {
            "available_markets": MARKETS,
            "copyrights": [],
            "description": format!("{show}, a podcast."),
            "html_description": format!("<p>{show}, a podcast.</p>"),
            "explicit": false,
            "external_urls": external_urls("show", &show_id),
            "href": format!("{api}/shows/{show_id}"),
            "id": show_id,
            "images": images(&show_id),
            "is_externally_hosted": false,
            "languages": ["en"],
            "media_type": "audio",
            "name": show,
            "publisher": show,
            "total_episodes": 42,
            "type": "show",
            "uri": format!("spotify:show:{show_id}"),
        },
    })
}

/// PrivateUserObject.
fn user_object(api: &str, id: &str, display_name: &str) -> Value {
    json!({
        "account_id": derived_id(&format!("account:{id}")),
        "country": "DE",
        "display_name": display_name,
        "email": format!("{id}@example.com"),
        "explicit_content": { "filter_enabled": false, "filter_locked": false },
        "external_urls": external_urls("user", id),
        "followers": { "href": null, "total": 0 },
        "href": format!("{api}/users/{id}"),
        "id": id,
        "images": [],
        "product": "premium",
        "type": "user",
        "uri": format!("spotify:user:{id}"),
    })
}

/// A PagingObject over `all`, with the page at `offset`.
fn paging(href_base: &str, all: &[Value], limit: usize, offset: usize) -> Value {
    let page: Vec<Value> = all.iter().skip(offset).take(limit).cloned().collect();
    let link = |offset: usize| format!("{href_base}&offset={offset}&limit={limit}");
    let next = (offset + limit < all.len()).then(|| link(offset + limit));
    let previous = (offset > 0).then(|| link(offset.saturating_sub(limit)));
    json!({
        "href": link(offset),
        "items": page,
        "limit": limit,
        "next": next,
        "offset": offset,
        "previous": previous,
        "total": all.len(),
    })
}

// ---------------------------------------------------------------------------------------
// Accounts service.

/// `GET /authorize`: checks the request and redirects back as the consenting user would.
async fn authorize(State(fake): State<FakeSpotify>, uri: Uri) -> Response {
    let params = query_map(&uri);
    let mut s = fake.state();
    s.authorize_requests.push(params.clone());
    let param = |name: &str| params.get(name).map(String::as_str);

    if param("client_id") != Some(CLIENT_ID) {
        return page_error("INVALID_CLIENT: Invalid client");
    }
    if param("response_type") != Some("code") {
        return page_error("unsupported_response_type: response_type must be code");
    }
    let Some(redirect) = param("redirect_uri")
        .and_then(|r| url::Url::parse(r).ok())
        .filter(|u| matches!(u.scheme(), "http" | "https"))
    else {
        return page_error("INVALID_CLIENT: Invalid redirect URI");
    };
    let scopes: Vec<String> = param("scope")
        .unwrap_or("")
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    if scopes.is_empty() {
        return page_error("INVALID_SCOPE: scope is required");
    }
    if let Some(bad) = scopes.iter().find(|s| !KNOWN_SCOPES.contains(&s.as_str())) {
        return page_error(&format!("INVALID_SCOPE: Illegal scope {bad}"));
    }

    let mut location = redirect.clone();
    if std::mem::take(&mut s.deny_next) {
        location
            .query_pairs_mut()
            .append_pair("error", "access_denied");
    } else {
        let Some(user) = s.consenting.clone() else {
            return page_error("fake Spotify: nobody to consent, call authorize_as first");
        };
        let code = random_token(48);
        s.codes.insert(
            code.clone(),
            Code {
                redirect_uri: redirect.as_str().to_owned(),
                user,
                scopes,
                used: false,
            },
        );
        location.query_pairs_mut().append_pair("code", &code);
    }
    if let Some(state) = param("state") {
        location.query_pairs_mut().append_pair("state", state);
    }
    (
        StatusCode::SEE_OTHER,
        [(header::LOCATION, location.to_string())],
    )
        .into_response()
}

/// Whether the request carries `Authorization: Basic base64(CLIENT_ID:CLIENT_SECRET)`.
fn client_authenticated(headers: &HeaderMap) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| {
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
        })
        .is_some_and(|d| d == format!("{CLIENT_ID}:{CLIENT_SECRET}").as_bytes())
}

/// `POST /api/token`: the authorization-code, refresh-token and client-credentials grants.
async fn token(State(fake): State<FakeSpotify>, headers: HeaderMap, body: Bytes) -> Response {
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let grant = form.get("grant_type").cloned().unwrap_or_default();
    let mut s = fake.state();
    s.token_calls.push(grant.clone());
    if let Some(failure) = s.token_failures.pop_front() {
        return failure_response(failure);
    }
    let form_encoded = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !form_encoded {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Body must be application/x-www-form-urlencoded",
        );
    }
    if !client_authenticated(&headers) {
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", "Invalid client");
    }
    let field = |name: &str| form.get(name).map(String::as_str).unwrap_or("");

    let answer = match grant.as_str() {
        "authorization_code" => {
            let redirect_uri = url::Url::parse(field("redirect_uri"))
                .map(String::from)
                .unwrap_or_default();
            let Some(code) = s
                .codes
                .get_mut(field("code"))
                .filter(|c| !c.used && c.redirect_uri == redirect_uri)
            else {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    "Invalid authorization code",
                );
            };
            code.used = true;
            let (user, scopes) = (code.user.clone(), code.scopes.clone());
            s.issue(Some(&user), &scopes, true)
        }
        "refresh_token" => {
            let rotate = s.rotate;
            let Some(old) = s
                .refresh
                .iter_mut()
                .find(|t| t.token == field("refresh_token") && !t.dead)
            else {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    "Refresh token revoked",
                );
            };
            if rotate {
                old.dead = true;
            }
            let (user, scopes) = (old.user.clone(), old.scopes.clone());
            *s.refreshes.entry(user.clone()).or_default() += 1;
            s.issue(Some(&user), &scopes, rotate)
        }
        "client_credentials" => s.issue(None, &[], false),
        _ => {
            let body = json!({ "error": "unsupported_grant_type" });
            return (StatusCode::BAD_REQUEST, axum::Json(body)).into_response();
        }
    };
    axum::Json(answer).into_response()
}

// ---------------------------------------------------------------------------------------
// Web API.

/// The Web API endpoints the fake serves.
enum Endpoint {
    Me,
    CurrentlyPlaying,
    RecentlyPlayed,
    Track(String),
    Search,
}

impl Endpoint {
    fn of(path: &str) -> Option<Self> {
        match path {
            "/v1/me" | "/v1/me/" => Some(Self::Me),
            "/v1/me/player/currently-playing" => Some(Self::CurrentlyPlaying),
            "/v1/me/player/recently-played" => Some(Self::RecentlyPlayed),
            "/v1/search" => Some(Self::Search),
            _ => path
                .strip_prefix("/v1/tracks/")
                .filter(|id| !id.contains('/'))
                .map(|id| Self::Track(id.to_owned())),
        }
    }

    /// Whether an app (client-credentials) token may call it.
    fn app_allowed(&self) -> bool {
        matches!(self, Self::Track(_) | Self::Search)
    }

    /// The scopes of which a user token needs one, if any.
    fn needs_one_of(&self) -> &'static [&'static str] {
        match self {
            Self::CurrentlyPlaying => &["user-read-currently-playing", "user-read-playback-state"],
            Self::RecentlyPlayed => &["user-read-recently-played"],
            _ => &[],
        }
    }
}

/// Who a Bearer token speaks for.
enum Caller {
    User(String),
    App,
}

/// A refusal to answer with [`api_error`].
type Refusal = (StatusCode, &'static str);

/// Checks the Bearer token for an endpoint.
fn authenticate(s: &Inner, headers: &HeaderMap, endpoint: &Endpoint) -> Result<Caller, Refusal> {
    let unauthorized = |message| (StatusCode::UNAUTHORIZED, message);
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return Err(unauthorized("No token provided"));
    };
    let Some(bearer) = value.strip_prefix("Bearer ") else {
        return Err((
            StatusCode::BAD_REQUEST,
            "Only valid bearer authentication supported",
        ));
    };
    let Some(token) = s
        .access
        .iter()
        .find(|t| t.token == bearer.trim() && !t.revoked)
    else {
        return Err(unauthorized("Invalid access token"));
    };
    if Instant::now() >= token.expires {
        return Err(unauthorized("The access token expired"));
    }
    let Some(user) = &token.user else {
        return if endpoint.app_allowed() {
            Ok(Caller::App)
        } else {
            Err(unauthorized("This endpoint needs a user access token"))
        };
    };
    let needs = endpoint.needs_one_of();
    if !needs.is_empty() && !token.scopes.iter().any(|s| needs.contains(&s.as_str())) {
        return Err((StatusCode::FORBIDDEN, "Insufficient client scope"));
    }
    Ok(Caller::User(user.clone()))
}

/// Everything that isn't the accounts service: the Web API under `/v1`, 404 elsewhere.
async fn web_api(
    State(fake): State<FakeSpotify>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let path = uri.path().to_owned();
    let api = fake.api_url();
    let mut s = fake.state();
    s.calls.push(path.clone());
    if let Some(i) = s.failures.iter().position(|(p, _)| path.starts_with(p)) {
        let (_, failure) = s.failures.remove(i);
        return failure_response(failure);
    }
    let Some(endpoint) = Endpoint::of(&path) else {
        return api_error(StatusCode::NOT_FOUND, "Service not found");
    };
    if method != Method::GET {
        return api_error(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed");
    }
    let caller = match authenticate(&s, &headers, &endpoint) {
        Ok(caller) => caller,
        Err((status, message)) => return api_error(status, message),
    };
    let params = query_map(&uri);
    match (endpoint, caller) {
        (Endpoint::Me, Caller::User(user)) => {
            let name = s.users.get(&user).cloned().unwrap_or_else(|| user.clone());
            axum::Json(user_object(&api, &user, &name)).into_response()
        }
        (Endpoint::CurrentlyPlaying, Caller::User(user)) => {
            currently_playing(&s, &api, &user, &params)
        }
        (Endpoint::RecentlyPlayed, Caller::User(user)) => {
            recently_played(&s, &api, &user, &params, uri.query().unwrap_or(""))
        }
        (Endpoint::Track(id), _) => {
            if !is_base62_id(&id) {
                return api_error(StatusCode::BAD_REQUEST, "Invalid base62 id");
            }
            match s.track(&id) {
                Some(track) => axum::Json(track_object(&api, track)).into_response(),
                None => api_error(StatusCode::NOT_FOUND, "Non existing id"),
            }
        }
        (Endpoint::Search, _) => search(&s, &api, &params),
        // `authenticate` lets app tokens through to app endpoints only.
        (_, Caller::App) => api_error(StatusCode::UNAUTHORIZED, "Invalid access token"),
    }
}

/// `GET /v1/me/player/currently-playing`: 204 when nothing plays, else a
/// CurrentlyPlayingObject (an episode's item only for clients asking for episodes).
fn currently_playing(
    s: &Inner,
    api: &str,
    user: &str,
    params: &HashMap<String, String>,
) -> Response {
    let Some((playing, since)) = s.playing.get(user) else {
        return StatusCode::NO_CONTENT.into_response();
    };
    let wants_episodes = params
        .get("additional_types")
        .is_some_and(|t| t.split(',').any(|t| t.trim() == "episode"));
    let (item, kind, progress_ms, is_playing) = match playing {
        Playing::Nothing => return StatusCode::NO_CONTENT.into_response(),
        Playing::Track {
            id,
            progress_ms,
            is_playing,
        } => match s.track(id) {
            Some(track) => (track_object(api, track), "track", *progress_ms, *is_playing),
            None => (Value::Null, "unknown", 0, false),
        },
        Playing::Episode { name, show } => {
            let item = if wants_episodes {
                episode_object(api, name, show)
            } else {
                Value::Null
            };
            (item, "episode", 600_000, true)
        }
        Playing::LocalFile { name, artist } => {
            (local_track_object(name, artist), "track", 30_000, true)
        }
    };
    let disallows = if is_playing {
        json!({ "resuming": true })
    } else {
        json!({ "pausing": true })
    };
    axum::Json(json!({
        "context": null,
        "timestamp": since,
        "progress_ms": progress_ms,
        "is_playing": is_playing,
        "item": item,
        "currently_playing_type": kind,
        // Spotify wraps the DisallowsObject in `disallows`; rspotify requires that key.
        "actions": { "disallows": disallows },
    }))
    .into_response()
}

/// Parses an optional integer query parameter; `Err` is the message of a 400.
fn int_param<T: std::str::FromStr>(
    params: &HashMap<String, String>,
    name: &str,
) -> Result<Option<T>, String> {
    match params.get(name) {
        None => Ok(None),
        Some(v) => v
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| format!("Invalid {name} parameter")),
    }
}

/// `GET /v1/me/player/recently-played`: a CursorPagingPlayHistoryObject, newest first.
/// With `after`, the page holds the plays right after the cursor (so paging forward with
/// `cursors.after` misses none); otherwise the newest plays before `before` (or now).
fn recently_played(
    s: &Inner,
    api: &str,
    user: &str,
    params: &HashMap<String, String>,
    query: &str,
) -> Response {
    let (limit, after, before) = match (
        int_param::<usize>(params, "limit"),
        int_param::<i64>(params, "after"),
        int_param::<i64>(params, "before"),
    ) {
        (Ok(limit), Ok(after), Ok(before)) => (limit.unwrap_or(20), after, before),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
            return api_error(StatusCode::BAD_REQUEST, &e);
        }
    };
    if !(1..=50).contains(&limit) {
        return api_error(StatusCode::BAD_REQUEST, "Invalid limit");
    }
    if after.is_some() && before.is_some() {
        return api_error(
            StatusCode::BAD_REQUEST,
            "Only one of the before and after parameters may be given",
        );
    }
    let mut plays: Vec<&(String, DateTime<Utc>)> = s
        .plays
        .get(user)
        .map(|p| p.iter().collect())
        .unwrap_or_default();
    plays.sort_by_key(|(_, at)| std::cmp::Reverse(*at));
    let ms = |p: &&(String, DateTime<Utc>)| p.1.timestamp_millis();

    let base = format!("{api}/me/player/recently-played");
    let (page, total, next) = if let Some(after) = after {
        let newer: Vec<_> = plays.into_iter().filter(|p| ms(p) > after).collect();
        let page = newer[newer.len().saturating_sub(limit)..].to_vec();
        let next =
            (newer.len() > limit).then(|| format!("{base}?after={}&limit={limit}", ms(&page[0])));
        (page, newer.len(), next)
    } else {
        let older: Vec<_> = plays
            .into_iter()
            .filter(|p| before.is_none_or(|b| ms(p) < b))
            .collect();
        let page: Vec<_> = older.iter().take(limit).copied().collect();
        let next = (older.len() > limit)
            .then(|| format!("{base}?before={}&limit={limit}", ms(&page[page.len() - 1])));
        (page, older.len(), next)
    };
    let cursors = match (page.first(), page.last()) {
        (Some(newest), Some(oldest)) => json!({
            "after": ms(newest).to_string(),
            "before": ms(oldest).to_string(),
        }),
        _ => Value::Null,
    };
    let items: Vec<Value> = page
        .iter()
        .filter_map(|(id, at)| {
            let track = s.track(id)?;
            Some(json!({
                "track": track_object(api, track),
                "played_at": at.to_rfc3339_opts(SecondsFormat::Millis, true),
                "context": null,
            }))
        })
        .collect();
    let href = if query.is_empty() {
        base
    } else {
        format!("{base}?{query}")
    };
    axum::Json(json!({
        "href": href,
        "limit": limit,
        "next": next,
        "cursors": cursors,
        "total": total,
        "items": items,
    }))
    .into_response()
}

/// `GET /v1/search`: catalogue tracks whose name or an artist contains any word of `q`.
fn search(s: &Inner, api: &str, params: &HashMap<String, String>) -> Response {
    const TYPES: &[&str] = &[
        "album",
        "artist",
        "playlist",
        "track",
        "show",
        "episode",
        "audiobook",
    ];
    let Some(q) = params.get("q").filter(|q| !q.trim().is_empty()) else {
        return api_error(StatusCode::BAD_REQUEST, "No search query");
    };
    let Some(types) = params.get("type") else {
        return api_error(StatusCode::BAD_REQUEST, "Missing parameter type");
    };
    let types: Vec<&str> = types.split(',').map(str::trim).collect();
    if types.iter().any(|t| !TYPES.contains(t)) || !types.contains(&"track") {
        return api_error(
            StatusCode::BAD_REQUEST,
            "Bad search type field (this fake searches tracks)",
        );
    }
    let (limit, offset) = match (
        int_param::<usize>(params, "limit"),
        int_param::<usize>(params, "offset"),
    ) {
        (Ok(limit), Ok(offset)) => (limit.unwrap_or(5), offset.unwrap_or(0)),
        (Err(e), _) | (_, Err(e)) => return api_error(StatusCode::BAD_REQUEST, &e),
    };
    if !(1..=10).contains(&limit) {
        return api_error(StatusCode::BAD_REQUEST, "Invalid limit");
    }
    if offset > 1000 {
        return api_error(StatusCode::BAD_REQUEST, "Invalid offset");
    }
    // Field filters (`artist:Queen`) count as their value.
    let words: Vec<String> = q
        .split_whitespace()
        .map(|w| w.rsplit(':').next().unwrap_or(w).to_lowercase())
        .filter(|w| !w.is_empty())
        .collect();
    let hits: Vec<Value> = s
        .catalogue
        .iter()
        .filter(|t| {
            let name = t.name.to_lowercase();
            let artists: Vec<String> = t.artists.iter().map(|a| a.to_lowercase()).collect();
            words
                .iter()
                .any(|w| name.contains(w) || artists.iter().any(|a| a.contains(w)))
        })
        .map(|t| track_object(api, t))
        .collect();
    let query: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("query", q)
        .finish();
    let mut body = serde_json::Map::new();
    for kind in types {
        let href_base = format!("{api}/search?{query}&type={kind}");
        let found: &[Value] = if kind == "track" { &hits } else { &[] };
        body.insert(format!("{kind}s"), paging(&href_base, found, limit, offset));
    }
    axum::Json(Value::Object(body)).into_response()
}

// ---------------------------------------------------------------------------------------
// The fake checks itself against rspotify, the client Segue uses.

mod tests {
    use std::collections::HashMap;
    use std::time::Duration;

    use chrono::Utc;
    use rspotify::model::{
        AdditionalType, CurrentlyPlayingType, PlayableItem, SearchResult, SearchType, TimeLimits,
        TrackId,
    };
    use rspotify::prelude::*;
    use rspotify::{AuthCodeSpotify, ClientCredsSpotify, ClientError, Config, Credentials};
    use serde_json::Value;

    use super::{CLIENT_ID, CLIENT_SECRET, Failure, FakeSpotify, Playing};

    const REDIRECT: &str = "http://127.0.0.1:9/auth/spotify/callback";
    const SCOPES: &str = "user-read-recently-played user-read-currently-playing";

    fn http() -> reqwest::Client {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
    }

    /// `/authorize` as `user`; the query of the redirect's `Location`.
    async fn authorize(fake: &FakeSpotify, user: &str, state: &str) -> HashMap<String, String> {
        fake.authorize_as(user);
        let res = http()
            .get(format!("{}/authorize", fake.accounts_url()))
            .query(&[
                ("client_id", CLIENT_ID),
                ("response_type", "code"),
                ("redirect_uri", REDIRECT),
                ("state", state),
                ("scope", SCOPES),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 303);
        let location = res.headers()[reqwest::header::LOCATION].to_str().unwrap();
        assert!(location.starts_with(REDIRECT), "{location}");
        url::Url::parse(location)
            .unwrap()
            .query_pairs()
            .into_owned()
            .collect()
    }

    /// Posts a form to the token endpoint with the app's credentials.
    async fn token_call(fake: &FakeSpotify, form: &[(&str, &str)]) -> reqwest::Response {
        http()
            .post(format!("{}/api/token", fake.accounts_url()))
            .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
            .form(form)
            .send()
            .await
            .unwrap()
    }

    /// Exchanges an authorization code.
    async fn exchange(fake: &FakeSpotify, code: &str, redirect_uri: &str) -> reqwest::Response {
        token_call(
            fake,
            &[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", redirect_uri),
            ],
        )
        .await
    }

    /// The whole authorization-code flow; the token endpoint's answer.
    async fn log_in(fake: &FakeSpotify, user: &str) -> Value {
        let query = authorize(fake, user, "st ate/1").await;
        assert_eq!(query["state"], "st ate/1");
        let res = exchange(fake, &query["code"], REDIRECT).await;
        assert_eq!(res.status(), 200);
        res.json().await.unwrap()
    }

    fn config(fake: &FakeSpotify) -> Config {
        Config {
            api_base_url: fake.api_url() + "/",
            auth_base_url: fake.accounts_url() + "/",
            token_refreshing: false,
            ..Default::default()
        }
    }

    fn client(fake: &FakeSpotify, answer: &Value) -> AuthCodeSpotify {
        let mut token: rspotify::Token = serde_json::from_value(answer.clone()).unwrap();
        token.expires_at = Some(Utc::now() + token.expires_in);
        AuthCodeSpotify::from_token_with_config(
            token,
            Credentials::new(CLIENT_ID, CLIENT_SECRET),
            rspotify::OAuth::default(),
            config(fake),
        )
    }

    /// The status, headers and JSON body of a failed rspotify call.
    async fn http_failure<T: std::fmt::Debug>(
        result: Result<T, ClientError>,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let ClientError::Http(e) = result.unwrap_err() else {
            panic!("not an HTTP error");
        };
        let rspotify::http::HttpError::StatusCode(res) = *e else {
            panic!("no response");
        };
        let (status, headers) = (res.status().as_u16(), res.headers().clone());
        (status, headers, res.json().await.unwrap())
    }

    #[tokio::test]
    async fn rspotify_reads_what_the_fake_serves() {
        let fake = FakeSpotify::start().await;
        fake.add_user("ada", "Ada Lovelace");
        let answer = log_in(&fake, "ada").await;
        assert_eq!(answer["token_type"], "Bearer");
        assert_eq!(answer["expires_in"], 3600);
        let spotify = client(&fake, &answer);
        {
            let token = spotify.token.lock().await.unwrap();
            let token = token.as_ref().unwrap();
            assert_eq!(token.expires_in, chrono::Duration::seconds(3600));
            assert!(token.scopes.contains("user-read-currently-playing"));
            assert_eq!(
                fake.issued_refresh_tokens("ada"),
                vec![token.refresh_token.clone().unwrap()]
            );
            assert_eq!(
                fake.issued_access_tokens("ada"),
                vec![token.access_token.clone()]
            );
        }

        let me = spotify.me().await.unwrap();
        assert_eq!(me.id.id(), "ada");
        assert_eq!(me.display_name.as_deref(), Some("Ada Lovelace"));
        assert_eq!(fake.calls("/v1/me/"), 1, "rspotify asks for /v1/me/");

        let ids = fake.track_ids();
        let types = [AdditionalType::Track, AdditionalType::Episode];
        assert!(
            spotify
                .current_playing(None, Some(&types))
                .await
                .unwrap()
                .is_none()
        );
        fake.set_playing("ada", Playing::Nothing);
        assert!(
            spotify
                .current_playing(None, Some(&types))
                .await
                .unwrap()
                .is_none()
        );

        fake.set_playing(
            "ada",
            Playing::Track {
                id: ids[3].clone(),
                progress_ms: 61_234,
                is_playing: false,
            },
        );
        let now = spotify
            .current_playing(None, Some(&types))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(now.currently_playing_type, CurrentlyPlayingType::Track);
        assert!(!now.is_playing);
        assert_eq!(now.progress, Some(chrono::Duration::milliseconds(61_234)));
        let Some(PlayableItem::Track(track)) = now.item else {
            panic!("not a track: {:?}", now.item);
        };
        assert_eq!(track.id.unwrap().id(), ids[3]);
        assert_eq!(track.name, "Under Pressure");
        assert_eq!(track.artists.len(), 2);
        assert_eq!(track.album.images.len(), 3);

        fake.set_playing(
            "ada",
            Playing::Episode {
                name: "Pilot".to_owned(),
                show: "The Show".to_owned(),
            },
        );
        let now = spotify
            .current_playing(None, Some(&types))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(now.currently_playing_type, CurrentlyPlayingType::Episode);
        let Some(PlayableItem::Episode(episode)) = now.item else {
            panic!("not an episode: {:?}", now.item);
        };
        assert_eq!(
            (episode.name.as_str(), episode.show.name.as_str()),
            ("Pilot", "The Show")
        );
        let now = spotify
            .current_playing(None, Some(&[AdditionalType::Track]))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(now.currently_playing_type, CurrentlyPlayingType::Episode);
        assert!(now.item.is_none(), "episodes only for clients asking");

        fake.set_playing(
            "ada",
            Playing::LocalFile {
                name: "Demo Tape".to_owned(),
                artist: "Garage Band".to_owned(),
            },
        );
        let now = spotify
            .current_playing(None, Some(&types))
            .await
            .unwrap()
            .unwrap();
        let Some(PlayableItem::Track(local)) = now.item else {
            panic!("not a track: {:?}", now.item);
        };
        assert!(local.is_local && local.id.is_none());
        assert_eq!(local.name, "Demo Tape");
        assert_eq!(local.artists[0].name, "Garage Band");

        let t0 = Utc::now() - chrono::Duration::minutes(30);
        fake.record_play("ada", &ids[0], t0);
        fake.record_play("ada", &ids[1], t0 + chrono::Duration::minutes(10));
        fake.record_play("ada", &ids[2], t0 + chrono::Duration::minutes(20));
        let page = spotify
            .current_user_recently_played(Some(1), None)
            .await
            .unwrap();
        assert_eq!(page.items.len(), 1);
        assert_eq!(page.items[0].track.id.as_ref().unwrap().id(), ids[2]);
        let played_at = t0 + chrono::Duration::minutes(20);
        assert_eq!(
            page.items[0].played_at.timestamp_millis(),
            played_at.timestamp_millis()
        );
        assert!(page.next.is_some());
        let page = spotify
            .current_user_recently_played(Some(50), Some(TimeLimits::After(t0)))
            .await
            .unwrap();
        let got: Vec<_> = page
            .items
            .iter()
            .map(|p| p.track.id.as_ref().unwrap().id().to_owned())
            .collect();
        assert_eq!(
            got,
            [ids[2].clone(), ids[1].clone()],
            "newest first, after t0"
        );
        assert_eq!(
            page.cursors.unwrap().after,
            Some(played_at.timestamp_millis().to_string())
        );

        let track = spotify
            .track(TrackId::from_id(&ids[0]).unwrap(), None)
            .await
            .unwrap();
        assert_eq!(track.name, "Never Gonna Give You Up");
        assert!((120_000..=300_000).contains(&track.duration.num_milliseconds()));

        let found = spotify
            .search(
                "never pressure",
                SearchType::Track,
                None,
                None,
                Some(5),
                None,
            )
            .await
            .unwrap();
        let SearchResult::Tracks(page) = found else {
            panic!("not tracks");
        };
        let names: Vec<_> = page.items.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["Never Gonna Give You Up", "Under Pressure"]);
        assert_eq!((page.total, page.limit, page.offset), (2, 5, 0));
    }

    #[tokio::test]
    async fn app_tokens_serve_tracks_and_search_only() {
        let fake = FakeSpotify::start().await;
        fake.add_track("0000000000000000000001", "Fake Song", "Nobody", 150_000);
        let app = ClientCredsSpotify::with_config(
            Credentials::new(CLIENT_ID, CLIENT_SECRET),
            config(&fake),
        );
        app.request_token().await.unwrap();
        assert_eq!(fake.token_calls("client_credentials"), 1);
        let track = app
            .track(TrackId::from_id("0000000000000000000001").unwrap(), None)
            .await
            .unwrap();
        assert_eq!(
            (track.name.as_str(), track.artists[0].name.as_str()),
            ("Fake Song", "Nobody")
        );
        assert_eq!(
            fake.track_json("0000000000000000000001")["album"]["album_type"],
            "single"
        );
        let found = app
            .search("NOBODY", SearchType::Track, None, None, None, None)
            .await
            .unwrap();
        assert!(matches!(found, SearchResult::Tracks(p) if p.items.len() == 1));

        let token = app
            .token
            .lock()
            .await
            .unwrap()
            .clone()
            .unwrap()
            .access_token;
        let get = |path: &str| {
            http()
                .get(format!("{}{path}", fake.api_url()))
                .bearer_auth(&token)
                .send()
        };
        assert_eq!(get("/me").await.unwrap().status(), 401);
        assert_eq!(
            get("/tracks/0000000000000000000009")
                .await
                .unwrap()
                .status(),
            404
        );
        let res = get("/tracks/not-an-id").await.unwrap();
        assert_eq!(res.status(), 400);
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"]["message"], "Invalid base62 id");
        assert_eq!(get("/search?type=track").await.unwrap().status(), 400);
        assert_eq!(get("/search?q=x&type=album").await.unwrap().status(), 400);
        assert_eq!(
            get("/search?q=x&type=track&limit=11")
                .await
                .unwrap()
                .status(),
            400
        );
        assert_eq!(get("/nowhere").await.unwrap().status(), 404);
    }

    #[tokio::test]
    async fn tokens_expire_rotate_and_get_revoked() {
        let fake = FakeSpotify::start().await;
        fake.set_token_lifetime(Duration::from_secs(1));
        let answer = log_in(&fake, "bo").await;
        assert_eq!(answer["expires_in"], 1);
        let spotify = client(&fake, &answer);
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let (status, _, body) = http_failure(spotify.me().await).await;
        assert_eq!(status, 401);
        assert_eq!(body["error"]["message"], "The access token expired");

        // rspotify refreshes through the accounts base URL; without rotation the
        // refresh token stays the same.
        fake.set_token_lifetime(Duration::from_secs(3600));
        spotify.refresh_token().await.unwrap();
        assert_eq!(fake.refreshes("bo"), 1);
        assert_eq!(spotify.me().await.unwrap().id.id(), "bo");

        fake.rotate_refresh_tokens(true);
        let first = answer["refresh_token"].as_str().unwrap();
        let res = token_call(
            &fake,
            &[("grant_type", "refresh_token"), ("refresh_token", first)],
        )
        .await;
        let rotated: Value = res.json().await.unwrap();
        let second = rotated["refresh_token"].as_str().unwrap();
        assert_ne!(first, second);
        assert_eq!(fake.issued_refresh_tokens("bo"), [first, second]);
        let res = token_call(
            &fake,
            &[("grant_type", "refresh_token"), ("refresh_token", first)],
        )
        .await;
        assert_eq!(res.status(), 400, "rotated out");

        fake.revoke("bo");
        let res = token_call(
            &fake,
            &[("grant_type", "refresh_token"), ("refresh_token", second)],
        )
        .await;
        assert_eq!(res.status(), 400);
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"], "invalid_grant");
        assert_eq!(body["error_description"], "Refresh token revoked");
        let (status, _, body) = http_failure(spotify.me().await).await;
        assert_eq!(status, 401);
        assert_eq!(body["error"]["message"], "Invalid access token");
        assert_eq!(fake.refreshes("bo"), 2);
        assert_eq!(fake.token_calls("refresh_token"), 4);
        assert_eq!(fake.issued_access_tokens("bo").len(), 3);
    }

    #[tokio::test]
    async fn failures_are_injected_and_counted() {
        let fake = FakeSpotify::start().await;
        let spotify = client(&fake, &log_in(&fake, "cy").await);
        fake.fail_next(
            "/v1/me/player",
            1,
            Failure::RateLimited {
                retry_after_secs: 7,
            },
        );
        fake.fail_next("/v1/me/player", 1, Failure::Status(503));
        let (status, headers, body) =
            http_failure(spotify.current_user_recently_played(None, None).await).await;
        assert_eq!(status, 429);
        assert_eq!(headers[reqwest::header::RETRY_AFTER], "7");
        assert_eq!(body["error"]["message"], "API rate limit exceeded");
        let none: Option<&[AdditionalType]> = None;
        let (status, _, _) = http_failure(spotify.current_playing(None, none).await).await;
        assert_eq!(status, 503);
        assert!(spotify.current_playing(None, none).await.unwrap().is_none());
        assert_eq!(fake.calls("/v1/me/player"), 3);
        assert_eq!(fake.calls("/v1/me/player/currently-playing"), 2);

        let get = |query: &str| {
            http()
                .get(format!(
                    "{}/me/player/recently-played?{query}",
                    fake.api_url()
                ))
                .bearer_auth(spotify_token(&fake))
                .send()
        };
        assert_eq!(get("after=1&before=2").await.unwrap().status(), 400);
        assert_eq!(get("limit=51").await.unwrap().status(), 400);
        assert_eq!(get("limit=0").await.unwrap().status(), 400);
        let empty: Value = get("limit=50").await.unwrap().json().await.unwrap();
        assert_eq!(empty["items"], serde_json::json!([]));

        fake.fail_next_token(1, Failure::Status(502));
        let res = token_call(&fake, &[("grant_type", "client_credentials")]).await;
        assert_eq!(res.status(), 502);
        let res = token_call(&fake, &[("grant_type", "client_credentials")]).await;
        assert_eq!(res.status(), 200);
        assert_eq!(fake.token_calls("client_credentials"), 2);
    }

    fn spotify_token(fake: &FakeSpotify) -> String {
        fake.issued_access_tokens("cy").pop().unwrap()
    }

    #[tokio::test]
    async fn authorize_and_code_exchange_refuse_what_spotify_refuses() {
        let fake = FakeSpotify::start().await;
        let get = |query: &[(&str, &str)]| {
            http()
                .get(format!("{}/authorize", fake.accounts_url()))
                .query(query)
                .send()
        };
        let ok = [
            ("client_id", CLIENT_ID),
            ("response_type", "code"),
            ("redirect_uri", REDIRECT),
            ("scope", SCOPES),
        ];
        assert_eq!(
            get(&ok).await.unwrap().status(),
            400,
            "nobody to consent yet"
        );
        let mut bad_client = ok;
        bad_client[0].1 = "someone-else";
        assert_eq!(get(&bad_client).await.unwrap().status(), 400);
        let mut bad_redirect = ok;
        bad_redirect[2].1 = "ftp://example.com/";
        assert_eq!(get(&bad_redirect).await.unwrap().status(), 400);
        assert_eq!(get(&ok[..3]).await.unwrap().status(), 400, "no scope");
        assert_eq!(fake.authorize_requests().len(), 4);
        assert_eq!(fake.authorize_requests()[3]["redirect_uri"], REDIRECT);

        fake.deny_next_authorize();
        let query = authorize(&fake, "di", "s").await;
        assert_eq!(query["error"], "access_denied");
        assert_eq!(query["state"], "s");
        assert!(!query.contains_key("code"));

        let query = authorize(&fake, "di", "s").await;
        let code = query["code"].as_str();
        let res = exchange(&fake, code, "http://127.0.0.1:9/elsewhere").await;
        assert_eq!(res.status(), 400);
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"], "invalid_grant");
        assert_eq!(body["error_description"], "Invalid authorization code");
        assert_eq!(exchange(&fake, code, REDIRECT).await.status(), 200);
        let res = exchange(&fake, code, REDIRECT).await;
        assert_eq!(res.status(), 400, "codes are single-use");

        let res = http()
            .post(format!("{}/api/token", fake.accounts_url()))
            .basic_auth(CLIENT_ID, Some("wrong"))
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401);
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"], "invalid_client");
        let res = token_call(&fake, &[("grant_type", "password")]).await;
        assert_eq!(res.status(), 400);
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"], "unsupported_grant_type");
    }

    #[test]
    fn payloads_carry_the_fields_the_spec_requires() {
        let api = "http://127.0.0.1:1/v1";
        let track = super::Inner::new().catalogue[0].clone();
        let track = super::track_object(api, &track);
        let album_base = [
            "album_type",
            "total_tracks",
            "available_markets",
            "external_urls",
            "href",
            "id",
            "images",
            "name",
            "release_date",
            "release_date_precision",
            "type",
            "uri",
            "artists",
        ];
        for key in album_base {
            assert!(track["album"].get(key).is_some(), "album lacks {key}");
        }
        let episode = super::episode_object(api, "E", "S");
        let episode_base = [
            "audio_preview_url",
            "description",
            "html_description",
            "duration_ms",
            "explicit",
            "external_urls",
            "href",
            "id",
            "images",
            "is_externally_hosted",
            "is_playable",
            "languages",
            "name",
            "release_date",
            "release_date_precision",
            "type",
            "uri",
            "show",
        ];
        for key in episode_base {
            assert!(episode.get(key).is_some(), "episode lacks {key}");
        }
        let show_base = [
            "available_markets",
            "copyrights",
            "description",
            "explicit",
            "external_urls",
            "href",
            "html_description",
            "id",
            "images",
            "is_externally_hosted",
            "languages",
            "media_type",
            "name",
            "publisher",
            "total_episodes",
            "type",
            "uri",
        ];
        for key in show_base {
            assert!(episode["show"].get(key).is_some(), "show lacks {key}");
        }
        for image in track["album"]["images"].as_array().unwrap() {
            for key in ["url", "height", "width"] {
                assert!(image.get(key).is_some(), "image lacks {key}");
            }
        }
    }
}
