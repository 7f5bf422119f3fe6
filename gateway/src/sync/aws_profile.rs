//! Credentials and region from the AWS shared files (`~/.aws/credentials`, `~/.aws/config`,
//! or `AWS_SHARED_CREDENTIALS_FILE`, `AWS_CONFIG_FILE`), for the profile `AWS_PROFILE` or
//! `default`: the object store reads the environment, instance and container credentials,
//! but not these files, which is where `aws configure` puts them.

use std::path::PathBuf;

use ini::Ini;

/// What the files say for the profile; every field optional.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Profile {
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
    pub region: Option<String>,
}

impl Profile {
    /// The profile named by the environment, from the files the environment names (or the
    /// usual ones under `$HOME`). Files that are missing or unreadable give nothing.
    pub fn from_files() -> Profile {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let home = var("HOME").map(PathBuf::from);
        let in_home = |file: &str| home.as_ref().map(|h| h.join(".aws").join(file));
        let name = var("AWS_PROFILE").unwrap_or_else(|| "default".to_owned());
        let credentials =
            var("AWS_SHARED_CREDENTIALS_FILE").map(PathBuf::from).or_else(|| in_home("credentials"));
        let config = var("AWS_CONFIG_FILE").map(PathBuf::from).or_else(|| in_home("config"));
        let load = |path: Option<PathBuf>| path.and_then(|p| Ini::load_from_file(p).ok());
        Profile::from_ini(&name, load(credentials).as_ref(), load(config).as_ref())
    }

    /// The credentials file's section is the profile's name; the config file's is
    /// `profile NAME` (or `default`). Keys in the credentials file win.
    fn from_ini(name: &str, credentials: Option<&Ini>, config: Option<&Ini>) -> Profile {
        let config_section = if name == "default" { "default".to_owned() } else { format!("profile {name}") };
        let lookup = |key: &str| {
            let from = |ini: Option<&Ini>, section: &str| {
                ini.and_then(|i| i.section(Some(section)))
                    .and_then(|s| s.get(key))
                    .map(|v| v.trim().to_owned())
            };
            from(credentials, name).or_else(|| from(config, &config_section)).filter(|v| !v.is_empty())
        };
        Profile {
            access_key_id: lookup("aws_access_key_id"),
            secret_access_key: lookup("aws_secret_access_key"),
            session_token: lookup("aws_session_token"),
            region: lookup("region"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_profile_is_read_from_both_files() {
        let credentials = Ini::load_from_str(
            "[default]\naws_access_key_id = AKDEFAULT\naws_secret_access_key = s1\n\
             [field]\naws_access_key_id=AKFIELD\naws_secret_access_key=s2\naws_session_token=t2\n",
        )
        .unwrap();
        let config =
            Ini::load_from_str("[default]\nregion = eu-west-1\n[profile field]\nregion = eu-central-1\n")
                .unwrap();

        let default = Profile::from_ini("default", Some(&credentials), Some(&config));
        assert_eq!(default.access_key_id.as_deref(), Some("AKDEFAULT"));
        assert_eq!(default.region.as_deref(), Some("eu-west-1"));
        assert_eq!(default.session_token, None);

        let field = Profile::from_ini("field", Some(&credentials), Some(&config));
        assert_eq!(field.access_key_id.as_deref(), Some("AKFIELD"));
        assert_eq!(field.session_token.as_deref(), Some("t2"));
        assert_eq!(field.region.as_deref(), Some("eu-central-1"));

        assert_eq!(Profile::from_ini("other", Some(&credentials), Some(&config)), Profile::default());
        assert_eq!(Profile::from_ini("default", None, None), Profile::default());
    }
}
