_cfn__alert() {
    local i cur prev opts cmd
    COMPREPLY=()
    if [[ "${BASH_VERSINFO[0]}" -ge 4 ]]; then
        cur="$2"
    else
        cur="${COMP_WORDS[COMP_CWORD]}"
    fi
    prev="$3"
    cmd=""
    opts=""

    for i in "${COMP_WORDS[@]:0:COMP_CWORD}"
    do
        case "${cmd},${i}" in
            ",$1")
                cmd="cfn__alert"
                ;;
            *)
                ;;
        esac
    done

    case "${cmd}" in
        cfn__alert)
            opts="-h -V --rules --rule --print-rules --state --repeat --no-resolved --log --firing-prom --slack-webhook-file --pagerduty-routing-key-file --pagerduty-url --webhook-file --alertmanager --header --header-file --alert-valid-for --generator-url --http-timeout --retries --expect-within --no-last-seen --now --dry-run --strict --help --version"
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 1 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                --rules)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --rule)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --state)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --repeat)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --log)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --firing-prom)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --slack-webhook-file)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --pagerduty-routing-key-file)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --pagerduty-url)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --webhook-file)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --alertmanager)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --header)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --header-file)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --alert-valid-for)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --generator-url)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --http-timeout)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --retries)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --expect-within)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --no-last-seen)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --now)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
    esac
}

if [[ "${BASH_VERSINFO[0]}" -eq 4 && "${BASH_VERSINFO[1]}" -ge 4 || "${BASH_VERSINFO[0]}" -gt 4 ]]; then
    complete -F _cfn__alert -o nosort -o bashdefault -o default cfn-alert
else
    complete -F _cfn__alert -o bashdefault -o default cfn-alert
fi
