// German and English for the page. The language comes from the browser (Accept-Language,
// as navigator.languages tells it) unless the switch in the header chose one; English is the
// key and the fallback. Verdict reasons come with a code and parameters from the daemon.
"use strict";

const LANG_KEY = "schwebe-lang";
const LANG = localStorage.getItem(LANG_KEY) ||
  ((navigator.languages || [navigator.language || "en"])[0].toLowerCase().startsWith("de") ? "de" : "en");

const DE = {
  "Schwebe gateway": "Schwebe-Gateway", "Log out": "Abmelden", "loading…": "lädt…",
  "Remote configuration": "Fernkonfiguration", "Needs attention": "Braucht Aufmerksamkeit",
  "Parking spots": "Parkplätze", "free": "frei", "occupied": "belegt",
  "unknown (sensor silent)": "unbekannt (Sensor still)", "closed": "gesperrt",
  "Live frames": "Live-Funkrahmen", "Pause": "Anhalten", "Resume": "Fortsetzen",
  "Frames per minute": "Funkrahmen pro Minute", "Signal by spreading factor": "Signal nach Spreizfaktor",
  "Buffer depth": "Pufferfüllung", "Forwarder lag": "Rückstand der Weiterleitungen",
  "Downlink airtime": "Sendezeit Downlink", "Traffic": "Verkehr", "Radio": "Funk",
  "Buffer": "Puffer", "Forwarders": "Weiterleitungen", "Car counters": "Fahrzeugzähler",
  "Wired detectors": "Kabelgebundene Detektoren", "GNSS": "GNSS", "Components": "Komponenten",
  "Technician": "Techniker", "Check backends": "Backends prüfen",
  "Download buffer export": "Pufferexport herunterladen", "Running config": "Laufende Konfiguration",
  "Restart forwarder": "Weiterleitung neu starten", "time": "Zeit", "gateway": "Gateway",
  "device": "Gerät", "parking": "Parken",
  "received": "empfangen", "forwarded": "weitergeleitet", "records": "Datensätze",
  "state": "Zustand", "software": "Software", "version": "Version", "reason": "Grund", "source": "Quelle",
  "OK: data flows": "OK: Daten fließen",
  "DEGRADED: works, but needs a look": "EINGESCHRÄNKT: läuft, braucht aber einen Blick",
  "FAILING: act now": "STÖRUNG: jetzt handeln", "healthy": "gesund", "degraded": "eingeschränkt",
  "failing": "gestört", "no data yet": "noch keine Daten", "checking…": "prüft…",
  "not configured": "nicht eingerichtet", "running": "läuft", "stopped": "gestoppt",
  "Close spot": "Parkplatz sperren", "Reopen spot": "Sperre aufheben",
  "User name": "Benutzername", "Password": "Passwort", "Log in": "Anmelden",
};

// verdict reasons by code: [problem, action]; {name} is a parameter from the daemon
const REASONS_DE = {
  component_stopped: ["gestoppt: {error}", "Gateway neu starten (systemctl restart schwebe); kommt es wieder, das Log (journalctl -u schwebe) an den Support schicken"],
  rs485_missing: ["RS-485-Adapter {port} fehlt oder ist unbrauchbar", "USB-Kabel und Adapter prüfen (ls -l {port}; dmesg | tail)"],
  gnss_missing: ["GNSS-Empfänger {port} fehlt oder ist unbrauchbar", "USB-Kabel und Empfänger prüfen (ls -l {port}; dmesg | tail)"],
  wired_unit_silent: ["kabelgebundener Detektor {unit} ({spot}) antwortet nicht", "RS-485-Verkabelung und Stromversorgung dieses Detektors prüfen"],
  pf_never_heard: ["Paket-Forwarder auf {where} nie gehört", "lora_pkt_fwd prüfen (systemctl status lora-pkt-fwd) und dass seine Serveradresse {where} ist"],
  pf_silent: ["Paket-Forwarder seit {minutes} min nicht gehört auf {where}", "lora_pkt_fwd (systemctl status lora-pkt-fwd) und den Konzentrator prüfen"],
  fwd_never_reached: ["Backend nie erreicht: {error}", "Netzweg, Adresse und Zugangsdaten des Backends prüfen; {lag} Datensätze warten im Puffer, keiner geht verloren"],
  fwd_not_answering: ["Backend antwortet nicht: {error}", "Netzweg, Adresse und Zugangsdaten des Backends prüfen; {lag} Datensätze warten im Puffer, keiner geht verloren"],
  all_backends_down: ["kein Backend erhält Daten", "zuerst die Anbindung des Gateways (LTE/Glasfaser) prüfen: alle Backends sind weg"],
  store_corrupt: ["Pufferspeicher war beschädigt ({time}); verschoben nach {moved_to}", "SD-Karte tauschen einplanen; Lesbares mit schwebe buffer export --file <Datei> retten"],
  buffer_unwritable: ["Puffer kann nicht schreiben: {error}", "Speicher prüfen: voll (df -h) oder schreibgeschützt (dmesg); Datensätze warten solange im Speicher"],
};

function t(text) {
  return LANG === "de" && Object.prototype.hasOwnProperty.call(DE, text) ? DE[text] : text;
}

function fill(template, params) {
  return template.replace(/\{(\w+)\}/g, (m, k) => (params && params[k] != null ? String(params[k]) : m));
}

// a verdict reason in the page's language: [problem, action]
function reasonText(r) {
  const de = LANG === "de" && REASONS_DE[r.code];
  return de ? [fill(de[0], r.params), fill(de[1], r.params)] : [r.problem, r.action];
}

// the page's fixed texts: headings, buttons, labels, table heads, legends
function translatePage() {
  document.documentElement.lang = LANG;
  for (const el of document.querySelectorAll("h1, h2, h3, button, label, th, .legend span, a.button, p, .hint")) {
    for (const node of el.childNodes) {
      if (node.nodeType !== Node.TEXT_NODE) continue;
      const text = node.textContent.trim();
      if (text && t(text) !== text) node.textContent = node.textContent.replace(text, t(text));
    }
  }
  const sw = document.getElementById("lang");
  if (sw) {
    sw.textContent = LANG === "de" ? "EN" : "DE";
    sw.title = LANG === "de" ? "English" : "Deutsch";
    sw.addEventListener("click", () => {
      localStorage.setItem(LANG_KEY, LANG === "de" ? "en" : "de");
      location.reload();
    });
  }
}
