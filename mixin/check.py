#!/usr/bin/python3
"""Check the pool_health mixin against itself and against real scrapes.

    mixin/check.py [--metrics FILE] [--exporter FILE]

FILE: a scrape (text exposition format) of pool_health.metrics() or the
HTTP worker's /metrics (--metrics), and of prometheus-postgres-exporter
with exporter/pool_health_queries.yaml (--exporter).  Checks that

- every alert is named PoolHealth<CamelCase>, has a severity label
  (critical, warning or info), summary and description annotations, and
  refers only to names the recording rules record;
- the two recording groups (pool_health_http, pool_health_exporter)
  record the same names, each with its pool_health_source label;
- every metric a recording rule reads exists in its source's scrape, and
  every name the dashboard (panels, variables, annotations) uses is
  recorded, or exists in both scrapes;
- mixin/tests/ expects every alert to fire from each source, and not to
  fire, at some time.

Prints what it checked; exits 1 (after listing every problem) if one
failed.  Needs python3-yaml.
"""
import argparse
import glob
import json
import os
import re
import sys

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCES = {'pool_health_http': 'metrics', 'pool_health_exporter': 'exporter'}
SEVERITIES = {'critical', 'warning', 'info'}
problems = []


def problem(text):
    problems.append(text)


def load_yaml(name):
    with open(os.path.join(HERE, name)) as f:
        return yaml.safe_load(f)


def names_in(expr):
    """The pool_health metric names a PromQL expression reads."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)     # strings
    expr = re.sub(r'\{[^}]*\}', '', expr)                # matchers
    expr = re.sub(r'\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)', '', expr)
    return set(re.findall(r'(?<![\w:])(pool_health[_:][A-Za-z0-9_:]*)', expr))


def scraped(path):
    """The metric names in a scrape (samples and # TYPE lines)."""
    found = set()
    with open(path) as f:
        for line in f:
            m = re.match(r'# TYPE (\S+) ', line) or re.match(r'([A-Za-z_:][A-Za-z0-9_:]*)[{ ]', line)
            if m:
                found.add(m.group(1))
    return found


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--metrics', help='a scrape of metrics() or HTTP /metrics')
    parser.add_argument('--exporter', help='a scrape of prometheus-postgres-exporter')
    args = parser.parse_args()
    scrapes = {}
    if args.metrics:
        scrapes['metrics'] = scraped(args.metrics)
    if args.exporter:
        scrapes['exporter'] = scraped(args.exporter)

    # recording rules
    recorded = {}
    read = {}
    for group in load_yaml('recording_rules.yaml')['groups']:
        source = SOURCES.get(group['name'])
        if source is None:
            problem('recording group %s: not one of %s' % (group['name'], ', '.join(SOURCES)))
            continue
        recorded[source] = set()
        read[source] = set()
        for rule in group['rules']:
            if (rule.get('labels') or {}).get('pool_health_source') != source:
                problem('%s: %s has no label pool_health_source="%s"' % (group['name'], rule['record'], source))
            if not rule['record'].startswith('pool_health:'):
                problem('%s: %s is not named pool_health:...' % (group['name'], rule['record']))
            recorded[source].add(rule['record'])
            read[source] |= names_in(rule['expr'])
    if recorded.get('metrics') != recorded.get('exporter'):
        problem('the recording groups record different names: %s' %
                ' '.join(sorted(recorded.get('metrics', set()) ^ recorded.get('exporter', set()))))
    everywhere = set.intersection(*recorded.values()) if recorded else set()
    print('recording rules: %d names for each source' % len(everywhere))
    for source, names in sorted(scrapes.items()):
        missing = sorted(read.get(source, set()) - names)
        for name in missing:
            problem('recording group for %s reads %s, absent from its scrape' % (source, name))
        print('%s scrape: %d pool_health names; the recording rules read %d of them%s' %
              (source, len({n for n in names if n.startswith('pool_health')}),
               len(read.get(source, set()) & names), ', missing: ' + ' '.join(missing) if missing else ''))

    # alerting rules
    alerts = []
    for group in load_yaml('alerting_rules.yaml')['groups']:
        for rule in group['rules']:
            name = rule.get('alert')
            if name is None:
                problem('alerting_rules.yaml: a rule that is not an alert (%s)' % rule.get('record'))
                continue
            alerts.append(name)
            if not re.fullmatch(r'PoolHealth(?:[A-Z][a-z0-9]*)+', name):
                problem('%s: not CamelCase PoolHealth...' % name)
            if (rule.get('labels') or {}).get('severity') not in SEVERITIES:
                problem('%s: severity is not one of %s' % (name, ', '.join(sorted(SEVERITIES))))
            for annotation in ('summary', 'description'):
                if not (rule.get('annotations') or {}).get(annotation):
                    problem('%s: no %s annotation' % (name, annotation))
            for used in sorted(names_in(rule['expr']) - everywhere):
                problem('%s reads %s, which the recording rules do not record for both sources' % (name, used))
    print('alerting rules: %d alerts: %s' % (len(alerts), ' '.join(alerts)))

    # the dashboard
    with open(os.path.join(HERE, 'dashboard.json')) as f:
        dashboard = json.load(f)
    exprs = []

    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ('expr', 'query', 'definition') and isinstance(value, str):
                    exprs.append(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)
    walk(dashboard)
    used = set().union(*(names_in(e) for e in exprs)) if exprs else set()
    in_both = set.intersection(*scrapes.values()) if len(scrapes) == 2 else set()
    for name in sorted(used):
        if name in everywhere:
            continue
        if ':' not in name and len(scrapes) == 2 and name in in_both:
            continue
        problem('the dashboard uses %s, neither recorded for both sources nor in both scrapes' % name)
    print('dashboard: %d expressions, %d pool_health names' % (len(exprs), len(used)))

    # the unit tests: each alert fires, from each source, and stays quiet
    fired = {}
    quiet = set()
    for path in sorted(glob.glob(os.path.join(HERE, 'tests', '*.yaml'))):
        with open(path) as f:
            for test in yaml.safe_load(f).get('tests', []):
                for case in test.get('alert_rule_test', []):
                    if case.get('exp_alerts'):
                        for alert in case['exp_alerts']:
                            fired.setdefault(case['alertname'], set()).add(
                                alert.get('exp_labels', {}).get('pool_health_source'))
                    else:
                        quiet.add(case['alertname'])
    for name in alerts:
        for source in sorted(set(SOURCES.values()) - fired.get(name, set())):
            problem('%s: no unit test where it fires from the %s source' % (name, source))
        if name not in quiet:
            problem('%s: no unit test where it does not fire' % name)
    print('unit tests: %d alerts fire from both sources and stay quiet' %
          sum(1 for n in alerts if fired.get(n, set()) >= set(SOURCES.values()) and n in quiet))

    for text in problems:
        print('problem: ' + text)
    return 1 if problems else 0


if __name__ == '__main__':
    sys.exit(main())
