from roomwarden.cli import main

main()
