"""Provisioning runs: every check first (ids, settings, the firmware's verdict on each
config.json, what already exists), then the changes in an order that is safe to
repeat after a failure:

1. the ACL file (adds only missing lines),
2. the gateway's store (registering a known meter again is a no-op),
3. per meter: config.json written to a temporary file, the password set with
   mosquitto_passwd, then the file renamed into place. A config.json exists only for
   a meter whose password the broker has: it is the mark of "provisioned".
4. the broker told to reload: SIGHUP to --reload-pid, else `systemctl reload
   mosquitto` where systemd runs it (mosquitto.reload_after_change).

Service accounts go into the site's services_passwd_file and services_acl_file (the
service listener's own files) when it has them, else into the meters' files; meters
only ever go into the meters' files. Meters and services share one namespace of names,
checked in both pairs of files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..store.owner import as_owner
from . import ProvisionError, acl, files, identity, meterconfig, metertls, mosquitto
from .site import Site, require


@dataclass
class MeterRun:
    provisioned: list[str] = field(default_factory=list)
    rotated: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    registered: list[str] = field(default_factory=list)
    already_registered: list[str] = field(default_factory=list)
    db_path: Path | None = None
    acl_changed: bool = False
    reload: mosquitto.Reload = field(default_factory=lambda: mosquitto.Reload("none"))
    configs: dict[str, Path] = field(default_factory=dict)


@dataclass
class ServiceRun:
    name: str
    role: str
    password: str
    rotated: bool
    acl_changed: bool
    passwd_file: Path
    acl_file: Path
    region: str | None = None
    password_out: Path | None = None
    reload: mosquitto.Reload = field(default_factory=lambda: mosquitto.Reload("none"))


def _read(path: Path | None) -> str:
    try:
        return Path(path).read_text() if path else ""
    except FileNotFoundError:
        return ""


def _broker_files(site: Site, services: bool = False) -> mosquitto.PasswdFile:
    """The password file this run writes: the meters', or (services) the service accounts'."""
    require(site, ("passwd_file", "acl_file") + (("services_acl_file",) if site.separate_services else ()))
    passwd_file, acl_file = site.service_files if services else (site.passwd_file, site.acl_file)
    passwd = mosquitto.PasswdFile(passwd_file)  # raises if mosquitto_passwd is missing
    mosquitto.check_writable(passwd_file, "password file")
    mosquitto.check_writable(acl_file, "ACL file")
    return passwd


def _service_names(site: Site) -> dict[str, Path]:
    """Service accounts in the site's files: name -> the file that says so."""
    names = {n: site.acl_file for n in acl.users(_read(site.acl_file))}
    if site.separate_services:
        names.update({n: site.services_passwd_file for n in mosquitto.passwd_users(site.services_passwd_file)})
        names.update({n: site.services_acl_file for n in acl.users(_read(site.services_acl_file))})
    return names


def gateway_store(site: Site) -> Path:
    """The gateway's SQLite file: `db`, else the db_path of `gateway_config`, resolved
    the way `aquafog meter add -c` does. It must exist: a typo would otherwise make a
    new, empty store that no gateway reads."""
    if site.db is None and site.gateway_config is None:
        raise ProvisionError(
            "no gateway to register the meters with",
            hint="give --gateway-config gateway.toml (or --db the gateway's SQLite file), or gateway_config / "
                 "db in the site file; nothing was changed")
    from ..config import ConfigError, GatewayConfig
    if site.db is not None:
        db = Path(site.db)
    else:
        try:
            cfg = GatewayConfig.load(site.gateway_config)
        except ConfigError as exc:
            raise ProvisionError(f"gateway config {site.gateway_config} is not usable:", exc.errors,
                                 hint="fix it (`aquafog config check -c FILE` lists the same errors); "
                                      "nothing was changed") from None
        if cfg.topic_root != site.topic_root:
            raise ProvisionError(
                f"topic_root: the gateway ({site.gateway_config}) uses {cfg.topic_root!r}, the meters would "
                f"use {site.topic_root!r}", hint="set the same topic_root in the site file; nothing was changed")
        db = Path(cfg.db_path)
    db = db.expanduser().resolve()
    if not db.is_file():
        raise ProvisionError(f"the gateway's store {db} does not exist",
                             hint="start the gateway once (or run `aquafog init-db -c gateway.toml`), or check "
                                  "the path; nothing was changed")
    return db


def _register(db: Path, ids: list[str], label: str | None) -> tuple[list[str], list[str]]:
    from ..store.engine import open_engine
    from ..store.registry import add_meters
    engine = open_engine(db, create=False)
    try:
        return add_meters(engine, ids, label)
    finally:
        engine.dispose()


def register(db: Path, ids: list[str], label: str | None) -> tuple[list[str], list[str]]:
    """What `aquafog meter add` does, as the store's owner (root would leave it files the
    gateway cannot open); a running gateway sees new meters within 5 s."""
    return as_owner(db, _register, db, ids, label)


def provision_meters(site: Site, ids: list[str], rotate: bool = False, skip_existing: bool = False,
                     reload_pid: int | None = None, reload: bool = True) -> MeterRun:
    """reload: without reload_pid, reload a Mosquitto that systemd runs (after a change)."""
    if not ids:
        raise ProvisionError("no meter ids given", hint="give ids, --count N [--prefix m], or --ids-file FILE")
    bad = identity.name_problems(ids)
    if bad:
        raise ProvisionError(f"{len(bad)} invalid meter id(s):", bad, hint="nothing was changed")
    passwd = _broker_files(site)
    require(site, ("meters_dir",))
    db = gateway_store(site)
    _check_meters_dir(site.meters_dir)
    tls = metertls.from_site(site)
    if reload_pid:
        mosquitto.check_reload_target(reload_pid)
    run = MeterRun(db_path=db)
    with mosquitto.locked(site.passwd_file, site.services_passwd_file):
        acl_text = _read(site.acl_file)
        services = _service_names(site)
        accounts = passwd.users()
        problems: list[str] = []
        existing = orphan = False  # refusals that --rotate-password (or --skip-existing) would lift
        todo: dict[str, dict] = {}  # meter -> its new config
        for m in ids:
            path = meterconfig.config_path(site.meters_dir, m)
            if m in services:
                where = f"`user {m}` in" if services[m] != site.services_passwd_file else "a user of"
                problems.append(f"{m}: is a service account ({where} {services[m]}); choose another meter id")
            elif path.exists():
                if skip_existing and not rotate:
                    run.skipped.append(m)
                elif rotate:
                    cfg = meterconfig.read(path)
                    cfg["mqtt_password"] = identity.new_password()
                    todo[m] = cfg
                    run.rotated.append(m)
                else:
                    problems.append(f"meter {m} is already provisioned: {path}")
                    existing = True
            elif m in accounts:
                if rotate:
                    todo[m] = meterconfig.build(m, identity.new_password(), site.meter_settings())
                    run.rotated.append(m)
                else:
                    problems.append(f"meter {m} has a broker account in {site.passwd_file} but no {path} "
                                    "(provisioned from another checkout?)")
                    orphan = True
            elif rotate:
                problems.append(f"meter {m} is not provisioned yet, there is no password to rotate "
                                "(provision it without --rotate-password)")
            else:
                todo[m] = meterconfig.build(m, identity.new_password(), site.meter_settings())
                run.provisioned.append(m)
        if problems:
            hints = []
            if existing or orphan:
                hints.append("--rotate-password gives a meter a new password (its config.json and the password "
                             "file together)")
            if existing:
                hints.append("--skip-existing provisions only the new ones")
            raise ProvisionError(f"{len(problems)} meter(s) cannot be provisioned:", problems,
                                 hint="; ".join(hints + ["nothing was changed"]))
        if tls is not None:  # new meters and rotated ones alike: a rotation can turn TLS on
            for cfg in todo.values():
                cfg.update(tls.settings())
        meterconfig.check_all(todo)

        new_acl = acl.ensure(acl_text, site.topic_root)
        if new_acl != acl_text:
            files.replace_broker_file(site.acl_file, new_acl)
            run.acl_changed = True
        done = [f"meter patterns added to {site.acl_file}"] if run.acl_changed else []
        again = ("run the same command with --rotate-password again" if rotate
                 else "run the same command again with --skip-existing")
        if todo:
            try:
                run.registered, run.already_registered = register(db, list(todo), site.label)
            except Exception as exc:
                raise ProvisionError(f"registering at the gateway ({db}) failed: {exc}", done=done,
                                     hint="fix the cause and run the same command again") from exc
            done.append(f"{len(todo)} meter(s) registered at the gateway")
        finished: list[str] = []
        for m, cfg in todo.items():
            try:
                staged = meterconfig.stage(site.meters_dir, m, cfg)
            except OSError as exc:
                raise ProvisionError(f"cannot write {meterconfig.config_path(site.meters_dir, m)}: {exc.strerror}",
                                     done=done + _finished(finished),
                                     hint=f"fix the cause, then {again}") from None
            if tls is not None:  # before config.json: it marks a meter whose files are all there
                try:
                    metertls.write_files(tls, staged.path.parent, m)
                except (OSError, ProvisionError) as exc:
                    staged.discard()
                    raise ProvisionError(f"cannot write the TLS files of meter {m}: {exc}",
                                         done=done + _finished(finished), hint=f"fix the cause, then {again}") from None
            try:
                passwd.set(m, cfg["mqtt_password"])
            except ProvisionError as exc:
                staged.discard()
                raise ProvisionError(exc.message, exc.details, done=done + _finished(finished),
                                     hint=f"{exc.hint}; then {again}") from None
            staged.commit()
            run.configs[m] = staged.path
            finished.append(m)
    if todo or run.acl_changed:
        run.reload = mosquitto.reload_after_change(reload_pid, reload)
    return run


def _check_meters_dir(meters_dir: Path) -> None:
    d = Path(meters_dir).resolve()
    while not d.exists():
        d = d.parent
    if not d.is_dir() or not os.access(d, os.W_OK):
        raise ProvisionError(f"meters_dir {meters_dir}: cannot create files there ({d} is not a writable folder)",
                             hint="choose another --meters-dir or fix its permissions; nothing was changed")


def _finished(ms: list[str]) -> list[str]:
    return [f"meter(s) {', '.join(ms[:10])}{' ...' if len(ms) > 10 else ''} provisioned"] if ms else []


def provision_service(site: Site, name: str | None, role: str | None = None, rotate: bool = False,
                      password_out: Path | None = None, reload_pid: int | None = None, reload: bool = True,
                      region: str | None = None) -> ServiceRun:
    """A service account on the broker: `name` (default fog-<region> for a fog's bridge)
    with the topics of `role` (default: the role of the same name; fog with a region)."""
    if role is None:  # the role of the same name, else a region's bridge
        role = name if name in acl.ROLES else "fog" if region is not None else None
    if name is None:
        if role != "fog":
            raise ProvisionError("which account? give its name (e.g. gateway)",
                                 hint="only a fog's bridge account has a default name: fog-<region> with --region; "
                                      "nothing was changed")
        name = f"fog-{acl.check_role_region(role, region)}"
    bad = identity.name_problems([name], "service account name")
    if bad:
        raise ProvisionError(bad[0], hint="nothing was changed")
    if role not in acl.ROLES:
        raise ProvisionError(f"service account {name!r}: which role? {'unknown role ' + repr(role) if role else ''}"
                             .rstrip(), [f"{r}: {acl.ROLES[r].summary}" for r in acl.ROLES],
                             hint="give --role with one of the roles above")
    region = acl.check_role_region(role, region)
    passwd = _broker_files(site, services=True)
    passwd_file, acl_file = site.service_files
    if reload_pid:
        mosquitto.check_reload_target(reload_pid)
    if password_out is not None:
        password_out = Path(password_out)
        if password_out.exists():
            raise ProvisionError(f"--password-out {password_out}: the file exists, it is not overwritten",
                                 hint="give a new file name; nothing was changed")
    with mosquitto.locked(site.passwd_file, site.services_passwd_file):
        acl_text = _read(acl_file)
        meter_cfg = meterconfig.config_path(site.meters_dir, name) if site.meters_dir is not None else None
        exists = name in passwd.users()
        if meter_cfg is not None and meter_cfg.exists():
            raise ProvisionError(f"{name!r} is a meter ({meter_cfg}); a service account needs another name",
                                 hint="nothing was changed")
        if site.separate_services and name in mosquitto.passwd_users(site.passwd_file):
            raise ProvisionError(f"{name!r} has an account in the meters' password file {site.passwd_file}: it is a "
                                 "meter's (or was made by hand) and a service account needs another name",
                                 hint="nothing was changed")
        if exists and not rotate:
            raise ProvisionError(f"service account {name!r} already exists in {passwd_file}",
                                 hint="--rotate-password gives it a new password (then update the password where "
                                      "the service reads it); nothing was changed")
        if rotate and not exists:
            raise ProvisionError(f"service account {name!r} does not exist, there is no password to rotate",
                                 hint="drop --rotate-password; nothing was changed")
        if exists and name not in acl.users(acl_text):
            raise ProvisionError(f"{name!r} has a broker account but no `user {name}` block in {acl_file}: "
                                 "it is a meter's account (or was made by hand) and is left alone",
                                 hint="choose another service account name; nothing was changed")
        password = identity.new_password()
        # A file of its own holds no meter, and a cloud broker has none: no meter patterns there.
        patterns = not site.separate_services and acl.ROLES[role].broker == "fog"
        new_acl = acl.ensure(acl_text, site.topic_root, {name: role}, region=region, patterns=patterns)
        staged = None
        if password_out is not None:
            staged = files.stage_private(password_out, credentials_lines(name, password, role))
        try:
            if new_acl != acl_text:
                files.replace_broker_file(acl_file, new_acl)
            passwd.set(name, password)
        except BaseException:
            if staged:
                staged.discard()
            raise
        if staged:
            staged.commit()
    run = ServiceRun(name, role, password, rotated=exists, acl_changed=new_acl != acl_text,
                     passwd_file=Path(passwd_file), acl_file=Path(acl_file), region=region,
                     password_out=password_out)
    run.reload = mosquitto.reload_after_change(reload_pid, reload)
    return run


# Where each role's user name and password go: (file, what to set there).
CREDENTIALS = {
    "gateway": ("gateway.toml", "mqtt_username", "mqtt_password"),
    "observer": ("a client's settings", "mqtt_username", "mqtt_password"),
    "cloud": ("cloud.toml", "mqtt_username", "mqtt_password"),
    "fog": ("the fog's bridge (aquafog.bridge.BridgeConfig)", "remote_username", "remote_password"),
}


def credentials_lines(name: str, password: str, role: str = "gateway") -> str:
    """The two TOML lines that give a service its account, under a comment naming it."""
    _, user_key, password_key = CREDENTIALS.get(role, CREDENTIALS["gateway"])
    return (f"# broker account {name} (role {role}), made by `aquafog broker-account add`\n"
            f'{user_key} = "{name}"\n{password_key} = "{password}"\n')
